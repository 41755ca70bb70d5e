"""The types every runtime shares: sandboxes, what to create, the Runtime protocol and its base."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from labkit.k8s.standin import StandIn


@dataclass(frozen=True)
class Sandbox:
    """A node's or a pod's place to live, as the runtime made it."""

    lab: str
    name: str  # node name, or "NS/POD" for a pod
    netns_path: str  # a path setns() accepts: /run/netns/<ns> or /proc/<pid>/ns/net
    pid: int | None = None  # a process holding the sandbox's namespaces, if any
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeSpec:
    """What a runtime needs to know to create a node's sandbox."""

    name: str
    kind: str
    netns: str  # the lab-prefixed name (netns name, or container name)
    image: str | None = None
    hostname: str | None = None
    hosts: str = ""  # contents of the node's /etc/hosts
    resolv_conf: str = ""  # contents of the node's /etc/resolv.conf
    container: Any = None  # labkit.topology.containers.ContainerSettings: containerlab's container keys


@dataclass(frozen=True)
class PodSpec:
    """What a runtime needs to know to create a pod's sandbox and run its containers."""

    namespace: str
    name: str
    node: str
    netns: str  # the lab-prefixed sandbox name
    hostname: str
    hosts: str
    resolv_conf: str
    containers: Sequence[ContainerSpec] = ()
    # hostNetwork: true: the pod lives in this node sandbox's network namespace (its netns name), no CNI
    host_netns: str | None = None
    # restartPolicy Never/OnFailure (Jobs): containers run once, to their end; their exit codes are kept
    run_once: bool = False
    # the cluster gives pods IPv6 addresses: a sandbox must not have IPv6 disabled (Docker's `none` network does)
    ipv6: bool = False


# What a container gets when its securityContext asks for nothing (Docker's and containerd's default).
DEFAULT_CAPABILITIES = (
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "NET_RAW",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
)


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str | None
    argv: Sequence[str]  # what the netns runtime runs: command + args, empty without a command (k8s.standin.program)
    env: dict[str, str] = field(default_factory=dict)
    capabilities: tuple[str, ...] | None = DEFAULT_CAPABILITIES  # None: all (privileged); podproc.capabilities
    # As Kubernetes gives them to an image: `command` replaces its entrypoint, `args` its default arguments.
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    stand_in: StandIn | None = None  # set: labkit's stand-in runs instead (labkit.k8s.standin decides)


class Runtime(Protocol):
    """The interface every runtime satisfies (see netns.py and docker.py). RuntimeBase gives the
    batch operations a default; a runtime overrides them where it can do better."""

    name: str
    workers: int  # pods whose containers may start at once (a container engine overlaps its calls)

    def create_nodes(self, lab: str, nodes: Sequence[NodeSpec]) -> list[Sandbox]:
        """Every node's sandbox, in the order given."""
        ...

    def create_pods(self, lab: str, pods: Sequence[PodSpec]) -> list[Sandbox]:
        """Every pod's sandbox, in the order given; containers start later (start_containers)."""
        ...

    def create_node(self, lab: str, node: NodeSpec) -> Sandbox: ...

    def create_pod(self, lab: str, pod: PodSpec) -> Sandbox: ...

    def start_containers(self, lab: str, pod: PodSpec, sandbox: Sandbox) -> Sandbox | None:
        """Start a pod's containers once its network is wired; may return the sandbox updated
        (the netns runtime's holder pid)."""
        ...

    def exec(self, sandbox: Sandbox, argv: Sequence[str], *, capture: bool = False) -> tuple[int, str]:
        """Run argv in the sandbox's namespaces; return (exit code, output if captured)."""
        ...

    def remove_pod(self, lab: str, sandbox: Sandbox) -> None:
        """Remove one pod's sandbox, containers and processes (for `apply`). Idempotent."""
        ...

    def has_image(self, image: str) -> bool:
        """Whether the runtime can run `image` as it is (a container engine that has it)."""
        ...

    def finish_pods(self, lab: str) -> None:
        """After a batch of start_containers: let go of what the batch needed (the stand-ins' launcher)."""
        ...

    def destroy(self, lab: str) -> None:
        """Remove every sandbox of `lab` that exists, found by name prefix or label. Idempotent."""
        ...

    def labs(self) -> set[str]:
        """Names of the labs that have sandboxes in this runtime now."""
        ...


class RuntimeBase:
    """What every runtime inherits: the batch operations one at a time, one pod starting at a time."""

    name: str
    workers: int = 1

    def create_node(self, lab: str, node: NodeSpec) -> Sandbox:
        raise NotImplementedError

    def create_pod(self, lab: str, pod: PodSpec) -> Sandbox:
        raise NotImplementedError

    def create_nodes(self, lab: str, nodes: Sequence[NodeSpec]) -> list[Sandbox]:
        return [self.create_node(lab, node) for node in nodes]

    def create_pods(self, lab: str, pods: Sequence[PodSpec]) -> list[Sandbox]:
        return [self.create_pod(lab, pod) for pod in pods]

    def has_image(self, image: str) -> bool:
        return False  # a runtime without images runs none

    def finish_pods(self, lab: str) -> None:
        return None
