"""Runtimes own the sandboxes a lab's nodes and pods live in.

A runtime creates and removes sandboxes (network namespaces, or Docker
containers) and runs processes in them. Everything else - veth links,
addresses, routes, nftables, the CNI plugin - is done by labkit itself on the
sandbox's network namespace path, so it is the same for every runtime (as in
containerlab, which wires container namespaces through their PIDs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from labkit.runtime.podproc import DEFAULT_CAPABILITIES


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


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str | None
    argv: Sequence[str]  # command + args; empty means the image's default
    env: dict[str, str] = field(default_factory=dict)
    capabilities: tuple[str, ...] | None = DEFAULT_CAPABILITIES  # None: all (privileged); podproc.capabilities


class Runtime(Protocol):
    """The interface every runtime satisfies (see netns.py and docker.py)."""

    name: str

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

    def destroy(self, lab: str) -> None:
        """Remove every sandbox of `lab` that exists, found by name prefix or label. Idempotent."""
        ...

    def labs(self) -> set[str]:
        """Names of the labs that have sandboxes in this runtime now."""
        ...
