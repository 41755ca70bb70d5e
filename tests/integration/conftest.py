"""Integration tests: root, real namespaces and containers, labs from labkit's own pytest plugin.

Every lab here comes from the fixtures users get (`labkit_lab`, `labkit_lab_factory`,
`labkit_fixture`, `labkit_docker`), so the plugin's teardown and leftover check (namespaces,
files, links, containers, processes) guard every lab the suite builds. Lab tests run under both
runtimes; everything a test does in a lab goes through labkit's own exec, so the same assertions
hold for both.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from labkit.pytest_plugin import labkit_fixture
from labkit.runtime import runtime_names

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGIES = ROOT / "topologies"
RUNTIMES = runtime_names()
CLUSTER_TOPOLOGIES = {"host-gw": TOPOLOGIES / "kube-3node.yaml", "vxlan": TOPOLOGIES / "kube-vxlan.yaml",
                      "bgp": TOPOLOGIES / "kube-bgp.yaml"}

__all__ = ["CLUSTER_TOPOLOGIES", "ROOT", "RUNTIMES", "TOPOLOGIES", "kube_lab", "labkit"]


@pytest.fixture(scope="session", autouse=True)
def _root() -> None:
    """Tests that build namespaces by hand need root as much as labs do: fail, never skip."""
    if os.geteuid() != 0:
        pytest.fail("integration tests build network namespaces: run them as root")


# kube-3node (host-gw) and kube-vxlan under each runtime, shared by every test that only reads them;
# one of the four is up at a time (pytest runs the tests of one parameter together).
kube_lab = labkit_fixture(CLUSTER_TOPOLOGIES, runtime=RUNTIMES, scope="session")


def labkit(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real `labkit` command, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "labkit.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"labkit {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc
