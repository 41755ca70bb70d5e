"""Integration tests: root, real namespaces and containers, labs from labkit's own pytest plugin.

Every lab here comes from the fixtures users get (`labkit_lab`, `labkit_lab_factory`,
`labkit_fixture`, `labkit_docker`) or from the plugin's `start_lab`, so the plugin's teardown and
leftover check (namespaces, files, links, containers, processes) guard every lab the suite builds.
Lab tests run under both runtimes; everything a test does in a lab goes through labkit's own exec,
so the same assertions hold for both.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from labkit.pytest_plugin import RunningLab, start_lab
from labkit.runtime import runtime_names
from labkit.topology.kinds import CNI_MODES

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGIES = ROOT / "topologies"
RUNTIMES = runtime_names()
# One shipped ptp topology per CNI backend (same nodes, pods and Services in each). The shared cluster
# tests (pod network, Services and DNS, the topology's own `expect:`) run on each of them in every
# pod attachment mode (labkit.topology.kinds.CNI_MODES); a backend is added here in one line.
CLUSTER_TOPOLOGIES = {"host-gw": TOPOLOGIES / "kube-3node.yaml", "vxlan": TOPOLOGIES / "kube-vxlan.yaml",
                      "bgp": TOPOLOGIES / "kube-bgp.yaml"}
# A mode's own shipped topology stands in for the variant of its backend's (so it is the one run).
SHIPPED_VARIANTS = {("host-gw", "bridge"): TOPOLOGIES / "kube-bridge.yaml"}
# The docker runtime carries every backend and mode too, but not their product: each container lab costs
# several seconds more than a namespace one, and what docker changes (nodes in containers) is the same for all.
DOCKER_LABS = (("host-gw", "ptp"), ("vxlan", "bridge"), ("bgp", "ptp"))


def cluster_labs() -> list[tuple[str, str, str]]:
    """(runtime, backend, mode) of every shared cluster lab: netns in every backend x mode, docker in DOCKER_LABS."""
    labs = [("netns", backend, mode) for backend in CLUSTER_TOPOLOGIES for mode in CNI_MODES]
    if "docker" in RUNTIMES:
        labs += [("docker", backend, mode) for backend, mode in DOCKER_LABS if backend in CLUSTER_TOPOLOGIES]
    return labs


CLUSTER_LABS = cluster_labs()

__all__ = ["CLUSTER_LABS", "CLUSTER_TOPOLOGIES", "ROOT", "RUNTIMES", "TOPOLOGIES", "kube_lab", "labkit",
           "mode_variant"]


@pytest.fixture(scope="session", autouse=True)
def _root() -> None:
    """Tests that build namespaces by hand need root as much as labs do: fail, never skip."""
    if os.geteuid() != 0:
        pytest.fail("integration tests build network namespaces: run them as root")


def mode_variant(topology: Path, mode: str, folder: Path) -> Path:
    """`topology` with `cluster.cni.mode: mode`, written into `folder` (its workload paths made absolute)."""
    doc = yaml.safe_load(topology.read_text())
    doc["cluster"].setdefault("cni", {})["mode"] = mode
    doc["workloads"] = [str(topology.parent / w) if isinstance(w, str) else w for w in doc.get("workloads", [])]
    out = folder / f"{topology.stem}-{mode}.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


@pytest.fixture(scope="session", params=CLUSTER_LABS, ids=["-".join(p) for p in CLUSTER_LABS])
def kube_lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> RunningLab:
    """The cluster labs, shared by every test that only reads them; one is up at a time (pytest runs
    the tests of one parameter together). Test ids like `netns-vxlan-bridge`."""
    runtime, backend, mode = request.param
    topology = SHIPPED_VARIANTS.get((backend, mode)) or CLUSTER_TOPOLOGIES[backend]
    if yaml.safe_load(topology.read_text())["cluster"].get("cni", {}).get("mode", CNI_MODES[0]) != mode:
        topology = mode_variant(topology, mode, tmp_path_factory.mktemp(f"{backend}-{mode}"))
    return start_lab(request, topology, runtime=runtime)


def labkit(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real `labkit` command, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "labkit.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"labkit {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc
