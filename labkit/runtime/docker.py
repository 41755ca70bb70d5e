"""The docker runtime: every node and pod sandbox is a Docker container.

Nodes are privileged containers with `network_mode: none` (a node manages its
own network: sysctls, forwarding, nftables); labkit wires them through
`/proc/<pid>/ns/net` like the netns runtime wires `/run/netns/<name>`. Pods are
built the Kubernetes way: a pause container owns the pod's network namespace
and the app containers join it with `network_mode: container:<pause>`.

Everything carries the labels `labkit.lab`, `labkit.node`, `labkit.kind` and
`labkit.role`, so `destroy` finds a lab's containers from the daemon alone
(after a crash too) and never touches anything else. The engine's calls are
slow (tens of ms) but independent, so batches run on a thread pool.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from labkit import paths, processes
from labkit.errors import LabkitError
from labkit.files import write_atomic
from labkit.k8s.models import CAPABILITIES  # by number (capability.h): index i is capability i
from labkit.runtime.base import DEFAULT_CAPABILITIES, ContainerSpec, NodeSpec, PodSpec, RuntimeBase, Sandbox
from labkit.runtime.engine import WORKERS, connect, engine_url
from labkit.runtime.podproc import StandInLaunchers
from labkit.runtime.image import (
    DEFAULT_IMAGE, NODE_REPOSITORY, PAUSE_IMAGE, PAUSE_REPOSITORY, ensure_image, image_present,
)

if TYPE_CHECKING:
    import docker

    from labkit.topology.containers import ContainerSettings

LABEL_LAB = "labkit.lab"
LABEL_NODE = "labkit.node"
LABEL_KIND = "labkit.kind"
LABEL_ROLE = "labkit.role"  # node | pause | container
LABEL_POD = "labkit.pod"  # NS/NAME, on a pod's pause and app containers
LABEL_CONTAINER = "labkit.container"  # the ContainerSpec name, on app containers
LABEL_INDEX = "labkit.container-index"  # its position in the pod spec

# Nodes and pause containers idle and print nothing: no log file, no log copier.
QUIET_LOG = {"Type": "none", "Config": {}}
# A pause container on Docker's `none` network has IPv6 disabled (all and default): a cluster with IPv6
# pods turns it back on, so the interface the CNI plugin moves in takes its IPv6 address.
POD_IPV6_SYSCTLS = {"net.ipv6.conf.all.disable_ipv6": "0", "net.ipv6.conf.default.disable_ipv6": "0"}


T = TypeVar("T")
R = TypeVar("R")


def parallel(fn: Callable[[T], R], items: Iterable[T], workers: int = WORKERS) -> list[R]:
    """fn over items on a thread pool, results in order; the first failure is raised
    after every call has finished, so nothing is left half-started behind our back."""
    items = list(items)
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        futures = [pool.submit(fn, i) for i in items]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]
    return [f.result() for f in futures]


def node_privileges(status_path: str = "/proc/self/status") -> dict[str, object]:
    """Container options that make a node privileged, as far as this host allows.

    `privileged: true` asks runc for every capability; where the host's own
    bounding set lacks some (some VMs drop CAP_SYS_RESOURCE), runc fails with
    "unable to apply caps". Then a node gets every capability the host has,
    no seccomp/AppArmor filter and writable /proc/sys instead - all a network
    node needs.
    """
    try:
        with open(status_path) as f:
            bounding = next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
    except (OSError, StopIteration, ValueError):
        return {"privileged": True}
    wanted = (1 << (last + 1)) - 1
    if bounding & wanted == wanted:
        return {"privileged": True}
    missing = [name for i, name in enumerate(CAPABILITIES) if i <= last and not bounding >> i & 1]
    return {
        "cap_add": ["ALL"],  # every capability the engine knows ...
        "cap_drop": missing,  # ... but those runc could not grant
        "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
        "MaskedPaths": [],  # = --security-opt systempaths=unconfined: /proc/sys writable
        "ReadonlyPaths": [],
    }


def _capability_settings(caps: Sequence[str] | None) -> dict[str, object]:
    """A container's capabilities (podproc.capabilities) as the engine takes them: the difference
    from its default set, which is the same as labkit's (none for a default container)."""
    if caps is None:
        return {"privileged": True}
    add, drop = sorted(set(caps) - set(DEFAULT_CAPABILITIES)), sorted(set(DEFAULT_CAPABILITIES) - set(caps))
    return {**({"cap_add": add} if add else {}), **({"cap_drop": drop} if drop else {})}


class DockerRuntime(RuntimeBase):
    """Sandboxes as Docker containers (see the module docstring)."""

    name = "docker"

    def __init__(
        self,
        client: docker.DockerClient | None = None,
        *,
        base_url: str | None = None,
        state_dir: str | None = None,
        workers: int = WORKERS,
    ) -> None:
        self._client = client
        self.base_url = engine_url(base_url)
        self.state_dir = state_dir or paths.state_root()  # a temp folder in the runtime's own tests
        self.workers = workers
        self._images_checked: set[str] = set()
        self._images_present: dict[str, bool] = {}
        self._stand_in_launchers = StandInLaunchers(self.state_dir)
        self._lock = threading.Lock()
        self._privileges = node_privileges()

    @property
    def client(self) -> docker.DockerClient:
        with self._lock:
            if self._client is None:
                self._client = connect(self.base_url, pool_size=max(self.workers, 10))
            return self._client

    # --- sandboxes ------------------------------------------------------------

    def create_node(self, lab: str, node: NodeSpec) -> Sandbox:
        image = node.image or DEFAULT_IMAGE
        self._ensure_image(image)
        labels = {
            LABEL_LAB: lab,
            LABEL_NODE: node.name,
            LABEL_KIND: node.kind,
            LABEL_ROLE: "node",
        }
        settings = node_container_settings(node.container)
        info = self._run(
            name=node.netns,
            image=image,
            hostname=(node.container and node.container.hostname) or node.hostname or node.name,
            labels={**settings.pop("labels"), **labels},  # labkit's own labels win: destroy finds the lab by them
            command=settings.pop("command"),
            environment=settings.pop("environment"),
            create=settings.pop("create"),
            network_mode="none",
            log_config=QUIET_LOG,
            **copy.deepcopy(self._privileges),
            mounts=self._etc_mounts(lab, node.hosts, node.resolv_conf),
            **settings,
        )
        return self._sandbox(lab, node.name, info, labels)

    def create_nodes(self, lab: str, nodes: Sequence[NodeSpec]) -> list[Sandbox]:
        """create_node for many nodes at once (the engine's calls overlap), in waves when nodes wait
        for others (containerlab's `stages`/`wait-for`); `up` goes on once every healthcheck passes."""
        from labkit.topology.containers import creation_waves

        for image in {n.image or DEFAULT_IMAGE for n in nodes}:
            self._ensure_image(image)
        by_name = {n.name: n for n in nodes}
        after = {n.name: n.container.after if n.container else () for n in nodes}
        made: dict[str, Sandbox] = {}
        for wave in creation_waves(after) or [list(by_name)]:
            for other in {o for n in wave for o, stage in after[n] if stage in HEALTHY_STAGES and o in made}:
                self._wait_healthy(made[other], by_name[other])
            made.update(zip(wave, parallel(lambda n: self.create_node(lab, by_name[n]), wave, self.workers),
                            strict=True))
        for name, sandbox in made.items():
            self._wait_healthy(sandbox, by_name[name])
        return [made[n.name] for n in nodes]

    def _wait_healthy(self, sandbox: Sandbox, node: NodeSpec) -> None:
        """Until the node's healthcheck says healthy (Docker runs it); at most what its settings allow."""
        hc = node.container.healthcheck if node.container else None
        if hc is None:
            return
        limit = (hc.start_period or 0) + ((hc.interval or 30) + (hc.timeout or 30)) * ((hc.retries or 3) + 1)
        deadline = time.monotonic() + limit
        cid = sandbox.labels["labkit.container-id"]
        while True:
            health = (self.client.api.inspect_container(cid)["State"].get("Health") or {}).get("Status")
            if health == "healthy":
                return
            if health == "unhealthy" or time.monotonic() > deadline:
                raise LabkitError(f"node {node.name}: its healthcheck did not pass within {limit} s (state: {health})")
            time.sleep(0.2)  # polling the engine's own health state, not a readiness guess

    def create_pod(self, lab: str, pod: PodSpec) -> Sandbox:
        self._ensure_image(PAUSE_IMAGE)
        labels = {
            LABEL_LAB: lab,
            LABEL_NODE: pod.node,
            LABEL_KIND: "pod",
            LABEL_ROLE: "pause",
            LABEL_POD: f"{pod.namespace}/{pod.name}",
        }
        info = self._run(
            name=pod.netns,
            image=PAUSE_IMAGE,
            # hostNetwork: the node container's network (and so its hostname: Docker allows no other)
            hostname=None if pod.host_netns else pod.hostname,
            labels=labels,
            network_mode=f"container:{pod.host_netns}" if pod.host_netns else "none",
            log_config=QUIET_LOG,
            mounts=self._etc_mounts(lab, pod.hosts, pod.resolv_conf),
            **({"sysctls": POD_IPV6_SYSCTLS} if pod.ipv6 and not pod.host_netns else {}),
        )
        return self._sandbox(lab, f"{pod.namespace}/{pod.name}", info, labels)

    def create_pods(self, lab: str, pods: Sequence[PodSpec]) -> list[Sandbox]:
        """create_pod for many pods at once (the engine's calls overlap)."""
        self._ensure_image(PAUSE_IMAGE)
        return parallel(lambda p: self.create_pod(lab, p), pods, self.workers)

    def start_containers(self, lab: str, pod: PodSpec, sandbox: Sandbox) -> None:
        """Start the pod's app containers in the pause container's network namespace; a container
        with a stand-in (an image the engine lacks, where the topology allows it) gets no container:
        labkit's stand-in runs from the host in the pause container's network and UTS namespaces."""
        pause = self._pause(lab, pod)
        for spec in pod.containers:
            if spec.stand_in is None:
                self._ensure_image(spec.image or DEFAULT_IMAGE, f"pod {pod.namespace}/{pod.name} "
                                   f"container {spec.name}")
        # The same hosts/resolv.conf as the pause container (Docker copies its hostname).
        mounts = self._etc_mounts(lab, pod.hosts, pod.resolv_conf)
        self._start_stand_ins(lab, pod, sandbox)

        def start(item: tuple[int, ContainerSpec]) -> dict:
            index, spec = item
            return self._run(
                name=f"{pod.netns}.{spec.name}",
                image=spec.image or DEFAULT_IMAGE,
                # Kubernetes' mapping: command replaces the image's ENTRYPOINT, args its CMD; an argv alone
                # (a spec made without command/args) is the whole program.
                create={"entrypoint": list(spec.command) or (list(spec.argv) if not spec.args else []) or None},
                command=list(spec.args) or None,
                environment=dict(spec.env),
                labels={
                    LABEL_LAB: lab,
                    LABEL_NODE: pod.node,
                    LABEL_KIND: "pod",
                    LABEL_ROLE: "container",
                    LABEL_POD: f"{pod.namespace}/{pod.name}",
                    LABEL_CONTAINER: spec.name,
                    LABEL_INDEX: str(index),
                },
                network_mode=f"container:{pause['Id']}",
                mounts=mounts,
                inspect=False,
                **_capability_settings(spec.capabilities),
            )

        parallel(start, [(i, c) for i, c in enumerate(pod.containers) if c.stand_in is None], self.workers)

    def _start_stand_ins(self, lab: str, pod: PodSpec, sandbox: Sandbox) -> None:
        stand_ins = [c for c in pod.containers if c.stand_in is not None]
        if stand_ins and not sandbox.pid:
            raise LabkitError(f"lab {lab}: pod {pod.namespace}/{pod.name} has no running pause container")
        for spec in stand_ins:  # from the host, into the pause container's namespaces
            self._stand_in_launchers.start(lab, net=f"/proc/{sandbox.pid}/ns/net", uts=f"/proc/{sandbox.pid}/ns/uts",
                                           namespace=pod.namespace, pod=pod.name, container=spec)

    def finish_pods(self, lab: str) -> None:
        self._stand_in_launchers.close(lab)

    def has_image(self, image: str) -> bool:
        """Whether the engine has `image` (asked once per image and runtime object)."""
        with self._lock:
            known = self._images_present.get(image)
        if known is None:
            known = image_present(self.client, image)
            with self._lock:
                self._images_present[image] = known
        return known

    def exit_codes(self, lab: str, pod: str) -> list[int | None]:
        """Each app container's exit code (None while it runs), for pods that run once."""
        found = self._containers(f"{LABEL_LAB}={lab}", f"{LABEL_POD}={pod}", f"{LABEL_ROLE}=container")
        codes: list[int | None] = []
        for c in sorted(found, key=lambda c: int(c["Labels"].get(LABEL_INDEX, "0"))):
            if c.get("State") == "running":
                codes.append(None)
            else:
                codes.append(self.client.api.inspect_container(c["Id"])["State"]["ExitCode"])
        return codes

    def exec(
        self, sandbox: Sandbox, argv: Sequence[str], *, capture: bool = False
    ) -> tuple[int, str]:
        """Run argv in the node's container, or in a pod's first app container (else its pause).

        Captured output is stdout followed by stderr; uncaptured, they go to ours.
        """
        import docker.errors

        target = self._exec_target(sandbox)
        api = self.client.api
        cli = None if capture else shutil.which("docker")
        if cli:
            # Uncaptured is for people (`labkit exec`): with the CLI, stdin and a terminal work
            # as they do with the netns runtime's `ip netns exec`.
            flags = ["-i", "-t"] if sys.stdin.isatty() and sys.stdout.isatty() else ["-i"]
            env = {**os.environ, "DOCKER_HOST": self.base_url}
            proc = subprocess.run([cli, "exec", *flags, target["Id"], *argv], env=env, check=False)
            return proc.returncode, ""
        try:
            exec_id = api.exec_create(target["Id"], list(argv), stdout=True, stderr=True)["Id"]
        except docker.errors.APIError as e:
            raise LabkitError(
                f"lab {sandbox.lab}: cannot exec in {sandbox.name}: {_explain(e)}"
            ) from None
        if capture:
            # stdout, then stderr: their interleaving is lost across two pipes anyway
            out, err = api.exec_start(exec_id, demux=True)
            text = ((out or b"") + (err or b"")).decode(errors="replace")
        else:  # no docker CLI: stream the output, without stdin
            for out, err in api.exec_start(exec_id, stream=True, demux=True):
                if out:
                    sys.stdout.buffer.write(out)
                    sys.stdout.flush()
                if err:
                    sys.stderr.buffer.write(err)
                    sys.stderr.flush()
            text = ""
        code = api.exec_inspect(exec_id)["ExitCode"]
        return (code if code is not None else 1), text

    def destroy(self, lab: str) -> None:
        """Remove every container labelled with `lab`, as the daemon sees them now."""
        import docker.errors

        api = self.client.api

        def remove(c: dict) -> None:
            try:
                api.remove_container(c["Id"], force=True, v=True)
            except docker.errors.NotFound:
                pass  # gone already: removed by hand, or by an earlier destroy
            except docker.errors.APIError as e:
                if "already in progress" not in str(e):  # a concurrent destroy owns it
                    raise

        containers = self._lab_containers(lab)
        self._stop_host_processes(containers)
        # App containers and nodes first, then the pause containers whose netns they share.
        parallel(remove, [c for c in containers if _role(c) != "pause"], self.workers)
        parallel(remove, [c for c in containers if _role(c) == "pause"], self.workers)
        left = [_name(c) for c in self._lab_containers(lab) if c.get("State") != "removing"]
        if left:
            raise LabkitError(f"lab {lab}: could not remove containers: {', '.join(sorted(left))}")
        shutil.rmtree(self._lab_state(lab), ignore_errors=True)
        try:
            os.rmdir(paths.lab(lab, root=self.state_dir).dir)  # only if nothing else lives there
        except OSError:
            pass

    def remove_pod(self, lab: str, sandbox: Sandbox) -> None:
        """Remove one pod's containers (app containers, then its pause). Idempotent."""
        import docker.errors

        containers = self._containers(f"{LABEL_LAB}={lab}", f"{LABEL_POD}={sandbox.name}")
        if not sandbox.labels.get("host-network"):  # a hostNetwork pod's namespace is its node's, and stays
            self._stop_host_processes(containers)
        for c in sorted(containers, key=lambda c: _role(c) == "pause"):
            try:
                self.client.api.remove_container(c["Id"], force=True, v=True)
            except docker.errors.NotFound:
                pass
        # its stand-ins' pid files and logs
        shutil.rmtree(paths.lab(lab, root=self.state_dir).pod_dir(*sandbox.name.split("/", 1)), ignore_errors=True)

    def _stop_host_processes(self, containers: list[dict]) -> None:
        """Processes started from the host into a container's network namespace (agents, DNS
        servers, a user's nsenter) are not the engine's: stop them, or they outlive the lab."""
        netns_paths = []
        for c in containers:
            if c.get("State") != "running":
                continue
            try:
                pid = self.client.api.inspect_container(c["Id"])["State"]["Pid"]
            except Exception:  # noqa: BLE001 - gone meanwhile: nothing of it to stop
                continue
            if pid:
                netns_paths.append(f"/proc/{pid}/ns/net")
        if netns_paths:
            processes.stop_in_namespaces(netns_paths)

    def labs(self) -> set[str]:
        return {lab for c in self._containers(LABEL_LAB) if (lab := c["Labels"].get(LABEL_LAB))}

    # --- helpers --------------------------------------------------------------

    def _ensure_image(self, image: str, user: str | None = None) -> None:
        if image in self._images_checked:
            return
        if user is not None and not image.startswith((NODE_REPOSITORY, PAUSE_REPOSITORY)) \
                and not self.has_image(image):
            raise LabkitError(f"{user}: Docker image {image} not found in the Docker engine and labkit does not "
                              f"pull images: load it first (`docker load -i IMAGE.tar`, or `docker pull {image}` "
                              "where a registry is reachable), or let labkit's stand-in serve the container's "
                              "ports (`cluster.stand-ins: true` in the topology, or `labkit up --stand-in`)")
        ensure_image(self.client, image)
        self._images_checked.add(image)

    def _run(
        self,
        *,
        name: str,
        image: str,
        labels: dict[str, str],
        hostname: str | None = None,
        command: list[str] | None = None,
        environment: dict[str, str] | None = None,
        inspect: bool = True,
        create: dict | None = None,
        **host: object,
    ) -> dict:
        """Create and start a container (low-level API: 3 engine calls, not 5); return its
        inspect data (or just its Id). On failure the container is removed again."""
        import docker.errors

        api = self.client.api
        raw = {k: host.pop(k) for k in ("MaskedPaths", "ReadonlyPaths") if k in host}
        host_config = api.create_host_config(**host)
        host_config.update(raw)  # settings docker-py has no keyword for
        try:
            created = api.create_container(
                image,
                command=command,
                name=name,
                hostname=hostname,
                labels=labels,
                environment=environment or None,
                stop_signal="SIGTERM",
                host_config=host_config,
                **(create or {}),
            )
        except docker.errors.APIError as e:
            unknown = _UNKNOWN_CAP.search(_explain(e))
            drops = host.get("cap_drop")
            if unknown and isinstance(drops, list) and unknown.group(1) in drops:
                # A cap this engine cannot name is not in its "ALL" either: no need to drop it.
                with self._lock:
                    self._privileges["cap_drop"] = [c for c in drops if c != unknown.group(1)]
                return self._run(
                    name=name,
                    image=image,
                    labels=labels,
                    hostname=hostname,
                    command=command,
                    environment=environment,
                    inspect=inspect,
                    create=create,
                    **{**host, **raw, "cap_drop": list(self._privileges["cap_drop"])},
                )
            if e.status_code == 409:
                raise LabkitError(
                    f"container {name} exists already: remove the old lab first (labkit down)"
                ) from None
            raise LabkitError(f"cannot create container {name}: {_explain(e)}") from None
        cid = created["Id"]
        try:
            api.start(cid)
            return api.inspect_container(cid) if inspect else {"Id": cid, "Name": name}
        except docker.errors.APIError as e:
            try:
                api.remove_container(cid, force=True)
            except docker.errors.APIError:
                pass
            raise LabkitError(f"cannot start container {name}: {_explain(e)}") from None

    def _sandbox(self, lab: str, name: str, info: dict, labels: dict[str, str]) -> Sandbox:
        state = info["State"]
        pid = state.get("Pid")
        if not pid:
            raise LabkitError(
                f"container {info['Name'].lstrip('/')} is not running "
                f"(state: {state.get('Status')}, exit code {state.get('ExitCode')})"
            )
        return Sandbox(
            lab=lab,
            name=name,
            netns_path=f"/proc/{pid}/ns/net",
            pid=pid,
            labels={**labels, "labkit.container-id": info["Id"]},
        )

    def _lab_state(self, lab: str) -> str:
        return paths.lab(lab, root=self.state_dir).docker_dir

    def _etc_mounts(self, lab: str, hosts: str, resolv_conf: str) -> list:
        """Bind mounts of the sandbox's own /etc/hosts and /etc/resolv.conf (when given).

        Docker leaves these paths alone when a mount covers them. Files are named
        by their content, so the nodes of a lab, which share one hosts file, share
        one file on disk too; they live in the lab's docker folder (labkit.paths) until `destroy`.
        """
        from docker.types import Mount

        mounts = []
        for target, text in (("/etc/hosts", hosts), ("/etc/resolv.conf", resolv_conf)):
            if not text:
                continue
            text = text if text.endswith("\n") else text + "\n"
            digest = hashlib.sha256(text.encode()).hexdigest()[:16]
            path = os.path.join(self._lab_state(lab), f"{os.path.basename(target)}.{digest}")
            if not os.path.exists(path):
                write_atomic(path, text)  # its folders 0755 and it 0644, whatever the umask
            mounts.append(Mount(target=target, source=path, type="bind", read_only=True))
        return mounts

    def _containers(self, *labels: str, running: bool = False) -> list[dict]:
        """Containers carrying all `labels` (KEY or KEY=VALUE), as the engine lists them."""
        return self.client.api.containers(all=not running, filters={"label": list(labels)})

    def _lab_containers(self, lab: str) -> list[dict]:
        return self._containers(f"{LABEL_LAB}={lab}")

    def _pause(self, lab: str, pod: PodSpec) -> dict:
        found = self._containers(
            f"{LABEL_LAB}={lab}",
            f"{LABEL_POD}={pod.namespace}/{pod.name}",
            f"{LABEL_ROLE}=pause",
            running=True,
        )
        if not found:
            raise LabkitError(f"lab {lab}: pod {pod.namespace}/{pod.name} has no sandbox")
        return found[0]

    def _exec_target(self, sandbox: Sandbox) -> dict:
        lab = sandbox.lab
        if "/" in sandbox.name:
            found = self._containers(
                f"{LABEL_LAB}={lab}", f"{LABEL_POD}={sandbox.name}", running=True
            )
            apps = sorted(
                (c for c in found if _role(c) == "container"),
                key=lambda c: int(c["Labels"].get(LABEL_INDEX, "0")),
            )
            pauses = [c for c in found if _role(c) == "pause"]
            candidates = apps or pauses
            what = f"pod {sandbox.name}"
        else:
            candidates = self._containers(
                f"{LABEL_LAB}={lab}",
                f"{LABEL_NODE}={sandbox.name}",
                f"{LABEL_ROLE}=node",
                running=True,
            )
            what = f"node {sandbox.name}"
        if not candidates:
            raise LabkitError(f"lab {lab}: {what} has no running container")
        return candidates[0]


HEALTHY_STAGES = ("healthy", "exit")  # waiting for these waits for the node's healthcheck
_NS = 1_000_000_000


def node_container_settings(c: ContainerSettings | None) -> dict:
    """containerlab's container keys as the engine's create and host-config arguments."""
    out: dict = {"labels": {}, "command": None, "environment": None, "create": {}}
    if c is None:
        return out
    out["labels"] = dict(c.labels)
    out["command"] = list(c.cmd) if c.cmd is not None else None
    out["environment"] = dict(c.env) or None
    if c.entrypoint is not None:
        out["create"]["entrypoint"] = list(c.entrypoint)
    if c.user is not None:
        out["create"]["user"] = c.user
    if c.healthcheck is not None:
        hc = c.healthcheck
        out["create"]["healthcheck"] = {k: v for k, v in {
            "test": list(hc.test), "interval": hc.interval and hc.interval * _NS,
            "timeout": hc.timeout and hc.timeout * _NS, "retries": hc.retries,
            "start_period": hc.start_period and hc.start_period * _NS}.items() if v}
    if c.binds:
        out["binds"] = list(c.binds)
    if c.memory is not None:
        out["mem_limit"] = c.memory
    if c.cpus is not None:
        out["nano_cpus"] = int(c.cpus * _NS)
    if c.cpu_set is not None:
        out["cpuset_cpus"] = c.cpu_set
    return out


_UNKNOWN_CAP = re.compile(r'unknown capability: "?(?:CAP_)?([A-Z_]+)"?')


def _role(c: dict) -> str:
    return (c.get("Labels") or {}).get(LABEL_ROLE, "")


def _name(c: dict) -> str:
    names = c.get("Names") or [c["Id"][:12]]
    return names[0].lstrip("/")


def _explain(e: BaseException) -> str:
    explanation = getattr(e, "explanation", None)
    return str(explanation or e)
