"""kube-dualstack.yaml's pod network, on host-gw, vxlan and in bridge mode: every pod has an address of each
family from its node's podCIDR of that family (IPv4 first, as the cluster prefers), pods on different nodes
reach each other over both families without NAT (the server sees the client pod's own address), and traffic
leaving the cluster takes the node's address of its family. Each lab is shared by this module's tests (a
module-scoped fixture, one lab up at a time)."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from labkit import lab
from labkit.pytest_plugin import RunningLab, start_lab
from labkit.topology.plan import Plan

from .conftest import TOPOLOGIES

DUALSTACK = TOPOLOGIES / "kube-dualstack.yaml"
# (runtime, backend, mode): routed per family, IPv6 inside IPv4 vxlan, pods on a bridge holding both gateways.
# Containers (Docker's `none` network turns IPv6 off in a pod's sandbox unless labkit keeps it on) are the
# shared cluster tests' docker dual-stack lab (conftest.DUAL_STACK_LABS) and test_observe_dualstack's.
LABS = (("netns", "host-gw", "ptp"), ("netns", "vxlan", "ptp"), ("netns", "host-gw", "bridge"))

# A TCP server on both families (one IPv6 socket taking IPv4 too) answering each of `count` connections with
# the address it sees the client connect from (IPv4 ones without their ::ffff: prefix); "ready" once it listens.
PEER_ADDRESS_SERVER = """
import socket, sys
server = socket.socket(socket.AF_INET6)
server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("::", int(sys.argv[1])))
server.listen()
print("ready", flush=True)
for _ in range(int(sys.argv[2])):
    conn, peer = server.accept()
    conn.sendall(peer[0].removeprefix("::ffff:").encode() + b"\\n")
    conn.close()
"""


def variant(backend: str, mode: str, folder: Path) -> Path:
    """kube-dualstack.yaml with `cluster.cni` set to `backend` and `mode`."""
    doc = yaml.safe_load(DUALSTACK.read_text())
    doc["cluster"]["cni"] = {**doc["cluster"].get("cni", {}), "backend": backend, "mode": mode}
    doc["workloads"] = [str(DUALSTACK.parent / w) if isinstance(w, str) else w for w in doc.get("workloads", [])]
    out = folder / f"kube-dualstack-{backend}-{mode}.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


@pytest.fixture(scope="module", params=LABS, ids=["-".join(p) for p in LABS])
def dual(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[RunningLab, Plan]:
    """A dual-stack lab on one runtime, backend and mode, with its plan (the addresses labkit gave every node)."""
    runtime, backend, mode = request.param
    topology = DUALSTACK if (backend, mode) == ("host-gw", "ptp") else \
        variant(backend, mode, tmp_path_factory.mktemp(f"dualstack-{backend}-{mode}"))
    return start_lab(request, topology, runtime=runtime), lab.validate(str(topology))


def serve_peer_address(netns_path: str, port: int, count: int) -> subprocess.Popen:
    server = subprocess.Popen(["nsenter", f"--net={netns_path}", sys.executable, "-c", PEER_ADDRESS_SERVER, str(port),
                               str(count)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready = server.stdout.readline().strip()
    assert ready == "ready", server.stderr.read()
    return server


def connect(running: RunningLab, source: str, address: str, port: int) -> str:
    """What a TCP connection from `source` to address:port reads (the peer-address server's answer)."""
    target = f"TCP6:[{address}]:{port}" if ":" in address else f"TCP4:{address}:{port}"
    return running.exec(source, "socat", "-T3", "-", target).stdout.strip()


def node_cmd(running: RunningLab, node: str, *argv: str) -> str:
    return subprocess.run(["nsenter", f"--net={running.netns_path(node)}", *argv], capture_output=True, text=True,
                          check=True).stdout


def test_every_pod_has_an_address_of_each_family_from_its_node(dual) -> None:
    running, plan = dual
    cidrs = {n.name: n.pod_cidrs for n in plan.nodes if n.pod_cidrs}
    pods = [p for p in running.summary["pods"] if not p.get("host_network")]
    assert len(pods) >= 5  # web x3, client, the DNS server
    for pod in pods:
        v4, v6 = (ipaddress.ip_address(a) for a in pod["ips"])
        assert pod["ip"] == pod["ips"][0]
        assert (v4.version, v6.version) == (4, 6), pod  # the cluster's order: IPv4 preferred
        assert [v4 in cidrs[pod["node"]][0], v6 in cidrs[pod["node"]][1]] == [True, True], (pod, cidrs)
    # a hostNetwork pod's addresses are its node's, one per family in the cluster's order
    w1 = plan.node("w1")
    assert running.pods()["kube-system/agent"]["ips"] == [str(w1.mgmt_ipv4.ip), str(w1.mgmt_ipv6.ip)]
    # the addresses are on the pod's eth0, usable at once (no duplicate address detection pending)
    client = running.pods()["default/client"]
    shown = json.loads(running.exec("default/client", "ip", "-j", "addr", "show", "eth0").stdout)[0]["addr_info"]
    held = {a["local"]: a for a in shown if a.get("scope") == "global"}
    assert set(client["ips"]) == set(held)
    assert not any(a.get("tentative") or a.get("dadfailed") for a in held.values())


def test_pods_reach_pods_on_other_nodes_over_both_families(dual) -> None:
    running, _ = dual
    pods = running.pods()
    others = [p for p in pods.values() if p["node"] != "cp" and not p.get("host_network")]
    assert {p["node"] for p in others} == {"w1", "w2"}
    targets = [ip for p in others for ip in p["ips"]]

    def ping(ip: str) -> tuple[str, bool]:
        return ip, running.exec("default/client", "ping", "-c1", "-W2", ip).returncode == 0

    with ThreadPoolExecutor(8) as pool:
        failed = [ip for ip, ok in pool.map(ping, targets) if not ok]
    assert failed == [] and len(targets) == 2 * len(others)


def test_pod_to_pod_across_nodes_keeps_the_source_address_per_family(dual) -> None:
    running, _ = dual
    client = running.pods()["default/client"]
    server_pod = next(p for p in running.summary["pods"] if p["name"].startswith("web-") and p["node"] == "w2")
    server = serve_peer_address(server_pod["netns_path"], 9000, len(server_pod["ips"]))
    try:
        seen = [connect(running, "default/client", ip, 9000) for ip in server_pod["ips"]]
    finally:
        server.kill()
        server.wait()
    assert seen == client["ips"], "pod-to-pod traffic was NATed (or did not arrive)"


def test_traffic_leaving_the_cluster_takes_the_nodes_address_of_its_family(dual) -> None:
    running, plan = dual
    web = next(p for p in running.summary["pods"] if p["name"].startswith("web-") and p["node"] == "w1")
    ext, w1 = plan.node("ext"), plan.node("w1")
    assert ext.mgmt_ipv6 is not None and w1.mgmt_ipv6 is not None
    server = serve_peer_address(running.netns_path("ext"), 9001, 2)
    try:
        seen = [connect(running, f"{web['namespace']}/{web['name']}", str(a.ip), 9001)
                for a in (ext.mgmt_ipv4, ext.mgmt_ipv6)]
    finally:
        server.kill()
        server.wait()
    assert seen == [str(w1.mgmt_ipv4.ip), str(w1.mgmt_ipv6.ip)]


def test_nodes_route_each_family_as_the_backend_does(dual) -> None:
    """host-gw: each peer's IPv6 podCIDR via its IPv6 node address; vxlan: flannel.1 holds the node's own
    IPv6 podCIDR's ::, a permanent neighbour and an onlink route per peer; bridge: cni0 holds the IPv6
    gateway, usable at once; ptp: an IPv6 /128 per pod routed to its veth."""
    running, plan = dual
    cni = running.summary["cni"]
    cp = plan.node("cp")
    peers = [plan.node(n) for n in ("w1", "w2")]
    routes6 = json.loads(node_cmd(running, "cp", "ip", "-6", "-j", "route", "show"))
    if cni["backend"] == "host-gw":
        for peer in peers:
            assert {"dst": str(peer.pod_cidrs[1]), "gateway": str(peer.mgmt_ipv6.ip)} in [
                {"dst": r["dst"], "gateway": r.get("gateway")} for r in routes6], routes6
    else:
        own = json.loads(node_cmd(running, "cp", "ip", "-j", "addr", "show", "flannel.1"))[0]["addr_info"]
        assert {(a["local"], a["prefixlen"]) for a in own} >= {
            (str(cp.pod_cidrs[0].network_address), 32), (str(cp.pod_cidrs[1].network_address), 128)}
        neighbours = json.loads(node_cmd(running, "cp", "ip", "-6", "-j", "neigh", "show", "dev", "flannel.1"))
        for peer in peers:
            vtep = str(peer.pod_cidrs[1].network_address)
            assert any(n["dst"] == vtep and "PERMANENT" in n.get("state", []) for n in neighbours), neighbours
            assert any(r["dst"] == str(peer.pod_cidrs[1]) and r.get("gateway") == vtep and r.get("dev") == "flannel.1"
                       and "onlink" in r.get("flags", []) for r in routes6), routes6
    on_cp = [p for p in running.summary["pods"] if p["node"] == "cp" and not p.get("host_network")]
    gateway6 = str(cp.pod_cidrs[1].network_address + 1)
    if cni["mode"] == "bridge":
        held = json.loads(node_cmd(running, "cp", "ip", "-6", "-j", "addr", "show", "cni0"))[0]["addr_info"]
        gateway = next(a for a in held if a["local"] == gateway6)
        assert gateway["prefixlen"] == 64 and not gateway.get("tentative")
    else:
        for pod in on_cp:
            assert any(r["dst"] == pod["ips"][1] and r.get("dev", "").startswith("veth") for r in routes6), routes6
