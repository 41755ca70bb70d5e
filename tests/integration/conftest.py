"""Integration tests: root, real namespaces and containers, labs from labkit's own pytest plugin.

Every lab here comes from the fixtures users get (`labkit_lab`, `labkit_lab_factory`,
`labkit_fixture`, `labkit_docker`) or from the plugin's `start_lab`, so the plugin's teardown and
leftover check (namespaces, files, links, containers, processes) guard every lab the suite builds.
Lab tests run under both runtimes; everything a test does in a lab goes through labkit's own exec,
so the same assertions hold for both.
"""

from __future__ import annotations

import ipaddress
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
# (bgp under docker: tests/integration/test_bgp.py runs on both runtimes.)
DOCKER_LABS = (("host-gw", "ptp"), ("vxlan", "bridge"))
# Every shared cluster test runs in a dual-stack variant of these labs too (the same files, both families:
# labkit.families): every backend, each mode and both runtimes among them.
DUAL_STACK_LABS = (("netns", "host-gw", "bridge"), ("netns", "bgp", "ptp"), ("docker", "vxlan", "ptp"))
STACKS = ("ipv4", "dual")


def cluster_labs() -> list[tuple[str, str, str, str]]:
    """(runtime, backend, mode, stack) of every shared cluster lab: IPv4 netns in every backend x mode,
    docker in DOCKER_LABS, and the dual-stack variants of DUAL_STACK_LABS."""
    labs = [("netns", backend, mode, "ipv4") for backend in CLUSTER_TOPOLOGIES for mode in CNI_MODES]
    if "docker" in RUNTIMES:
        labs += [("docker", backend, mode, "ipv4") for backend, mode in DOCKER_LABS if backend in CLUSTER_TOPOLOGIES]
    labs += [(runtime, backend, mode, "dual") for runtime, backend, mode in DUAL_STACK_LABS
             if runtime in RUNTIMES and backend in CLUSTER_TOPOLOGIES]
    return labs


CLUSTER_LABS = cluster_labs()

__all__ = ["CLUSTER_LABS", "CLUSTER_TOPOLOGIES", "ROOT", "RUNTIMES", "TOPOLOGIES", "families", "kube_lab", "labkit",
           "mode_variant", "stack_variant"]


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


# The dual-stack variant's second family: a ULA of each, the cluster's IPv4 ranges kept as they are.
DUAL_STACK = {"pod-cidr": "fd00:10:244::/56", "service-cidr": "fd00:10:96::/112", "mgmt": "fd00:172:31::/64"}


EMBEDDED = ipaddress.IPv6Network("fd00:ffff::/96")  # a link's IPv4 a.b.c.d/p has the twin fd00:ffff::a.b.c.d/96+p


def stack_variant(topology: Path, folder: Path) -> Path:
    """`topology` made dual-stack: an IPv6 range beside each IPv4 one (IPv4 stays preferred), and every
    Service of its workloads PreferDualStack unless it says otherwise, so each gets a ClusterIP per family.
    Every IPv4 link address gets an IPv6 twin, every static IPv4 route its IPv6 twin: the pod, service and
    mgmt ranges map to their IPv6 ranges (mgmt .2 is ::2), other addresses embed into EMBEDDED."""
    doc = yaml.safe_load(topology.read_text())
    cluster = doc["cluster"]
    pod_v4, service_v4 = cluster.get("pod-cidr", "10.244.0.0/16"), cluster.get("service-cidr", "10.96.0.0/16")
    cluster["pod-cidr"] = f"{pod_v4},{DUAL_STACK['pod-cidr']}"
    cluster["service-cidr"] = f"{service_v4},{DUAL_STACK['service-cidr']}"
    mgmt = doc.setdefault("mgmt", {})
    mgmt["ipv6-subnet"] = DUAL_STACK["mgmt"]
    v4_mgmt = ipaddress.IPv4Network(mgmt.get("ipv4-subnet", "172.31.0.0/24"))
    ranges = {ipaddress.IPv4Network(pod_v4): DUAL_STACK["pod-cidr"], ipaddress.IPv4Network(service_v4):
              DUAL_STACK["service-cidr"]}

    def twin(address: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
        if address in v4_mgmt:
            return ipaddress.IPv6Network(DUAL_STACK["mgmt"]).network_address + (int(address) - int(v4_mgmt[0]))
        return EMBEDDED.network_address + int(address)

    def twin_interface(text: str) -> str:
        interface = ipaddress.IPv4Interface(text)
        return f"{twin(interface.ip)}/{96 + interface.network.prefixlen}"

    for node in doc["topology"]["nodes"].values():
        for route in list((node or {}).get("routes", [])):
            dst = route["dst"] if route["dst"] == "default" else ipaddress.ip_network(route["dst"])
            if dst != "default" and dst.version == 4:
                dst = ranges.get(dst) or f"{twin(dst.network_address)}/{96 + dst.prefixlen}"
            node["routes"].append({**route, "dst": str(dst), "via": str(twin(ipaddress.IPv4Address(route["via"])))})
    for link in doc["topology"].get("links", []):
        if link.get("ipv4") and not link.get("ipv6"):
            link["ipv6"] = [twin_interface(a) if a else "" for a in link["ipv4"]]
        for end in link.get("endpoints", []):
            if isinstance(end, dict) and end.get("ipv4") and not end.get("ipv6"):
                end["ipv6"] = twin_interface(end["ipv4"])
    docs = []
    for entry in doc.get("workloads", []):
        manifests = yaml.safe_load_all((topology.parent / entry).read_text()) if isinstance(entry, str) else [entry]
        for manifest in manifests:
            for container in _containers(manifest or {}):
                _listen_on_both_families(container)
            if manifest and manifest.get("kind") == "Service":
                spec = manifest.setdefault("spec", {})
                if spec.get("type") != "ExternalName":  # headless ones too: A and AAAA per endpoint
                    spec.setdefault("ipFamilyPolicy", "PreferDualStack")
            if manifest:
                docs.append(manifest)
    workloads = folder / f"{topology.stem}-dual-workloads.yaml"
    workloads.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    doc["workloads"] = [str(workloads)]
    out = folder / f"{topology.stem}-dual.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def _containers(manifest: dict) -> list[dict]:
    spec = manifest.get("spec") or {}
    return list(((spec.get("template") or {}).get("spec") or spec).get("containers") or [])


def _listen_on_both_families(container: dict) -> None:
    """A `socat TCP-LISTEN:...` server made to listen on IPv6 too: a second socat beside it on TCP6, the
    same options and reply (socat's TCP-LISTEN is IPv4 only; the shipped files keep the plain form)."""
    command = container.get("command") or []
    if len(command) == 3 and command[0] == "socat" and command[1].startswith("TCP-LISTEN:"):
        v6 = command[1].replace("TCP-LISTEN:", "TCP6-LISTEN:", 1) + ",ipv6only=1"
        script = f'socat {v6} "$1" & exec socat {command[1]} "$1"'
        container["command"] = ["sh", "-c", script, "sh", command[2]]


@pytest.fixture(scope="session", params=CLUSTER_LABS, ids=["-".join(p[:3]) + ("-dual" if p[3] == "dual" else "")
                                                            for p in CLUSTER_LABS])
def kube_lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> RunningLab:
    """The cluster labs, shared by every test that only reads them; one is up at a time (pytest runs
    the tests of one parameter together). Test ids like `netns-vxlan-bridge` and `netns-bgp-ptp-dual`."""
    runtime, backend, mode, stack = request.param
    topology = SHIPPED_VARIANTS.get((backend, mode)) or CLUSTER_TOPOLOGIES[backend]
    folder = tmp_path_factory.mktemp(f"{backend}-{mode}-{stack}")
    if yaml.safe_load(topology.read_text())["cluster"].get("cni", {}).get("mode", CNI_MODES[0]) != mode:
        topology = mode_variant(topology, mode, folder)
    if stack == "dual":
        topology = stack_variant(topology, folder)
    return start_lab(request, topology, runtime=runtime)


def families(lab: RunningLab) -> tuple[int, ...]:
    """The lab's cluster families, preferred first: (4,) or (4, 6)."""
    return (4, 6) if "," in str(yaml.safe_load(lab.topology.read_text())["cluster"].get("pod-cidr", "")) else (4,)


def labkit(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real `labkit` command, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "labkit.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"labkit {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc
