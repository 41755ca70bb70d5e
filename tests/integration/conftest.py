"""Integration fixtures: real labs in real namespaces or containers, always torn down, leftovers checked.

Every lab test runs under both runtimes: `runtime` is "netns" or "docker", and
everything a test does in a lab goes through labkit's own exec, so the same
assertions hold for both.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit import lab, state
from labkit.net import netns
from labkit.progress import Progress
from labkit.topology.plan import host_link_name, netns_prefix

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGIES = ROOT / "topologies"
RUNTIMES = ("netns", "docker")
CLUSTER_TOPOLOGIES = {"host-gw": "kube-3node.yaml", "vxlan": "kube-vxlan.yaml"}


@pytest.fixture(scope="session", autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.fail("integration tests build network namespaces: run them as root")


_engine_ready = False


def ensure_docker_engine() -> None:
    """Start the engine and build labkit's images, once; fail (never skip) when that is impossible."""
    global _engine_ready
    if _engine_ready:
        return
    proc = subprocess.run([str(ROOT / "scripts" / "start-dockerd.sh")], capture_output=True, text=True,
                          timeout=120, check=False)
    if proc.returncode != 0:
        pytest.fail(f"the docker runtime's tests need a Docker engine:\n{proc.stdout}{proc.stderr}")
    from labkit.runtime.image import build_images

    build_images()
    _engine_ready = True


@pytest.fixture(scope="module")
def client():
    """A Docker SDK client for a running engine with labkit's images (the docker runtime's own tests)."""
    from labkit.runtime.docker import connect

    ensure_docker_engine()
    docker_client = connect()
    yield docker_client
    docker_client.close()


def unique_name(stem: str = "t") -> str:
    """A lab name no other test or user lab will have (<= 12 chars)."""
    return f"{stem[:5]}-{secrets.token_hex(3)}"


def lab_containers(name: str) -> list[str]:
    if not _engine_ready:
        return []
    import docker

    client = docker.from_env()
    try:
        return [c.name for c in client.containers.list(all=True, filters={"label": f"labkit.lab={name}"})]
    finally:
        client.close()


def leftovers(name: str) -> list[str]:
    """Everything of lab `name` that still exists; empty after a clean `down`."""
    found = [f"netns {n}" for n in netns.list_namespaces(netns_prefix(name))]
    if os.path.isdir("/etc/netns"):
        found += [f"/etc/netns/{n}" for n in os.listdir("/etc/netns")
                  if n.startswith((netns_prefix(name), f".{netns_prefix(name)}"))]
    if os.path.exists(state.lab_dir(name)):
        found.append(state.lab_dir(name))
    if os.path.exists(f"/sys/class/net/{host_link_name(name)}"):
        found.append(f"host link {host_link_name(name)}")
    found += [f"container {c}" for c in lab_containers(name)]
    found += [f"process {pid}" for pid in processes_naming(state.lab_dir(name) + "/")]
    return found


def processes_naming(text: str) -> list[int]:
    """Pids whose command line mentions `text` (labkit's servers are given paths in the lab's state)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if text.encode() in fh.read():
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


def labkit(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real `labkit` command, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "labkit.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"labkit {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc


class RunningLab:
    def __init__(self, name: str, summary: dict):
        self.name = name
        self.summary = summary
        self.runtime = summary["runtime"]

    def exec(self, target: str, *argv: str) -> subprocess.CompletedProcess:
        """Run argv in a node (NODE) or pod (NS/POD) through labkit's runtime; output is stdout+stderr."""
        runtime, sandbox = lab.sandbox_of(self.name, target)
        code, output = runtime.exec(sandbox, argv, capture=True)
        return subprocess.CompletedProcess(argv, code, output, output)

    def ping(self, target: str, address: str) -> bool:
        return self.exec(target, "ping", "-c1", "-W2", address).returncode == 0

    def netns_path(self, target: str) -> str:
        return lab.sandbox_of(self.name, target)[1].netns_path


def start_lab(topology: Path | str, name: str | None = None, runtime: str = "netns") -> RunningLab:
    if runtime == "docker":
        ensure_docker_engine()
    name = name or unique_name(Path(topology).stem)
    summary = lab.up(str(topology), runtime=runtime, progress=Progress(quiet=True), name=name)
    return RunningLab(name, summary)


def stop_lab(running: RunningLab) -> None:
    lab.down(running.name)
    assert leftovers(running.name) == []


@pytest.fixture
def lab_factory() -> Iterator:
    """Bring labs up for one test; they are always torn down, and checked, afterwards."""
    started: list[str] = []

    def make(topology: Path | str, name: str | None = None, runtime: str = "netns") -> RunningLab:
        name = name or unique_name(Path(topology).stem)
        started.append(name)
        return start_lab(topology, name, runtime)

    yield make
    for name in started:
        lab.down(name)
    for name in started:
        assert leftovers(name) == [], f"lab {name} left things behind"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _recorded_pids(name: str, folder: str) -> list[int]:
    """Pids labkit recorded in a folder of the lab's state (dns: the DNS servers, cni: the CNI server)."""
    folder = os.path.join(state.lab_dir(name), folder)
    pids = []
    for entry in os.listdir(folder) if os.path.isdir(folder) else []:
        if entry.endswith(".pid"):
            with open(os.path.join(folder, entry)) as fh:
                pids.append(int(fh.read().split()[0]))  # "PID START" (labkit.processes)
    return pids


@pytest.fixture(scope="session", params=[(r, b) for r in RUNTIMES for b in sorted(CLUSTER_TOPOLOGIES)],
                ids=lambda p: f"{p[0]}-{p[1]}")
def kube_lab(request) -> Iterator[RunningLab]:
    """kube-3node (host-gw) and kube-vxlan under each runtime, shared by every test that only reads them."""
    runtime, backend = request.param
    running = start_lab(TOPOLOGIES / CLUSTER_TOPOLOGIES[backend], runtime=runtime)
    servers = _recorded_pids(running.name, "dns") + _recorded_pids(running.name, "cni")
    processes = [p["pid"] for p in running.summary["pods"] if p["pid"]] + servers
    assert len(servers) >= 2, "no DNS server or no CNI server started"
    yield running
    lab.down(running.name)
    assert leftovers(running.name) == []
    assert [pid for pid in processes if _alive(pid)] == [], "pod, DNS or CNI server processes survived down"


def pods(running: RunningLab) -> dict[str, dict]:
    """"ns/name" -> the pod's status entry."""
    return {f"{p['namespace']}/{p['name']}": p for p in running.summary["pods"]}


def in_pod(running: RunningLab, pod: str, *argv: str) -> subprocess.CompletedProcess:
    """Run argv in a pod (its own hostname, hosts and resolv.conf); output is stdout+stderr."""
    return running.exec(pod, *argv)
