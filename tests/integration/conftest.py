"""Integration fixtures: real labs in real namespaces, always torn down, leftovers checked."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit.runtime.podproc import nsenter_argv

from labkit import lab, state
from labkit.net import netns
from labkit.progress import Progress
from labkit.topology.plan import host_link_name, netns_prefix

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGIES = ROOT / "topologies"


@pytest.fixture(scope="session", autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.fail("integration tests build network namespaces: run them as root")


def unique_name(stem: str = "t") -> str:
    """A lab name no other test or user lab will have (<= 12 chars)."""
    return f"{stem[:5]}-{secrets.token_hex(3)}"


def leftovers(name: str) -> list[str]:
    """Everything of lab `name` that still exists; empty after a clean `down`."""
    found = [f"netns {n}" for n in netns.list_namespaces(netns_prefix(name))]
    if os.path.isdir("/etc/netns"):
        found += [f"/etc/netns/{n}" for n in os.listdir("/etc/netns") if n.startswith((netns_prefix(name), f".{netns_prefix(name)}"))]
    if os.path.exists(state.lab_dir(name)):
        found.append(state.lab_dir(name))
    if os.path.exists(f"/sys/class/net/{host_link_name(name)}"):
        found.append(f"host link {host_link_name(name)}")
    return found


def labkit(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real `labkit` command, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "labkit.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"labkit {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc


class RunningLab:
    def __init__(self, name: str, summary: dict):
        self.name = name
        self.summary = summary

    def exec(self, target: str, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", f"{netns_prefix(self.name)}{target}", *argv],
                              capture_output=True, text=True, timeout=60)

    def ping(self, target: str, address: str) -> bool:
        return self.exec(target, "ping", "-c1", "-W2", address).returncode == 0


def start_lab(topology: Path | str, name: str | None = None) -> RunningLab:
    name = name or unique_name(Path(topology).stem)
    summary = lab.up(str(topology), progress=Progress(quiet=True), name=name)
    return RunningLab(name, summary)


def stop_lab(running: RunningLab) -> None:
    lab.down(running.name)
    assert leftovers(running.name) == []


@pytest.fixture
def lab_factory() -> Iterator:
    """Bring labs up for one test; they are always torn down, and checked, afterwards."""
    started: list[RunningLab] = []

    def make(topology: Path | str, name: str | None = None) -> RunningLab:
        running = start_lab(topology, name)
        started.append(running)
        return running

    yield make
    for running in started:
        lab.down(running.name)
    for running in started:
        assert leftovers(running.name) == [], f"lab {running.name} left things behind"


CLUSTER_TOPOLOGIES = {"host-gw": "kube-3node.yaml", "vxlan": "kube-vxlan.yaml"}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _dns_pids(name: str) -> list[int]:
    folder = os.path.join(state.lab_dir(name), "dns")
    pids = []
    for entry in os.listdir(folder) if os.path.isdir(folder) else []:
        if entry.endswith(".pid"):
            with open(os.path.join(folder, entry)) as fh:
                pids.append(int(fh.read()))
    return pids


@pytest.fixture(scope="session", params=sorted(CLUSTER_TOPOLOGIES))
def kube_lab(request) -> Iterator[RunningLab]:
    """kube-3node (host-gw) and kube-vxlan, shared by every test that only reads them."""
    running = start_lab(TOPOLOGIES / CLUSTER_TOPOLOGIES[request.param])
    processes = [p["pid"] for p in running.summary["pods"]] + _dns_pids(running.name)
    assert _dns_pids(running.name), "no DNS server started"
    yield running
    lab.down(running.name)
    assert leftovers(running.name) == []
    assert [pid for pid in processes if _alive(pid)] == [], "pod or DNS processes survived down"


def pods(running: RunningLab) -> dict[str, dict]:
    """"ns/name" -> the pod's status entry."""
    return {f"{p['namespace']}/{p['name']}": p for p in running.summary["pods"]}


def in_pod(running: RunningLab, pod: str, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess:
    """Run argv in a pod's namespaces (its own hostname, hosts and resolv.conf)."""
    return subprocess.run(nsenter_argv(pods(running)[pod]["pid"], argv), capture_output=True, text=True,
                          timeout=timeout, check=False)
