"""LoadBalancer Services, MetalLB's model, in a real lab (kube-lb.yaml): an L2 pool answered by one node's
speaker, failover to another with gratuitous ARP, a BGP pool held as ECMP /32s by the ToR,
loadBalancerSourceRanges, externalTrafficPolicy: Local, externalIPs, a pending Service.

The lab is up once per runtime for the module; the failover test puts the stopped speaker back
(through `labkit apply`, which is what it tests) before the next test reads the lab.
"""

from __future__ import annotations

import json
import time

from labkit import lab, processes
from labkit.lb import announce
from labkit.pytest_plugin import RunningLab, labkit_fixture

from .conftest import RUNTIMES, TOPOLOGIES, labkit

KUBE_LB = TOPOLOGIES / "kube-lb.yaml"
NODE_IPS = {"cp": "172.31.0.2", "w1": "172.31.0.3", "w2": "172.31.0.4"}
EXT = "172.31.0.6"
FAILOVER_WITHIN = 5.0  # seconds: a speaker polls the others every 50 ms; this only bounds a broken one

kube_lb = labkit_fixture(KUBE_LB, runtime=RUNTIMES, scope="module")


def _status(running: RunningLab) -> dict:
    return lab.status(running.name)[0]


def _lb(running: RunningLab, service: str) -> dict:
    found = {f"{s['namespace']}/{s['name']}": s for s in _status(running)["services"]}
    return found[service]["load_balancer"]


def _mac(running: RunningLab, node: str) -> str:
    return json.loads(running.exec(node, "ip", "-j", "link", "show", "eth0", check=True).stdout)[0]["address"]


def _neighbour(running: RunningLab, ip: str) -> str | None:
    found = json.loads(running.exec("ext", "ip", "-j", "neigh", "show", ip, check=True).stdout or "[]")
    return found[0].get("lladdr") if found else None


def _ask(running: RunningLab, source: str, ip: str) -> list[str]:
    """The echo pod's answer: its name and the client address it sees."""
    return running.exec(source, "socat", "-T3", "-", f"TCP:{ip}:80", check=True).stdout.split()


def test_the_topology_expectations_hold(kube_lb: RunningLab) -> None:
    report = lab.verify_lab(kube_lb.name)
    assert report.ok, report


def test_the_client_arp_table_names_the_announcing_node(kube_lb: RunningLab) -> None:
    found = _lb(kube_lb, "default/web-l2")
    assert found["mode"] == "l2" and found["ip"] == "172.31.0.240"
    node = found["announcing_node"]
    assert node == found["l2_candidates"][0]  # every speaker runs: MetalLB's first choice answers
    _ask(kube_lb, "ext", "172.31.0.240")
    assert _neighbour(kube_lb, "172.31.0.240") == _mac(kube_lb, node)


def test_local_policy_is_answered_by_the_endpoint_node_and_keeps_the_client_address(kube_lb: RunningLab) -> None:
    assert _lb(kube_lb, "default/solo-local")["announcing_node"] == "w2"  # solo runs on w2 only
    assert _ask(kube_lb, "ext", "172.31.0.242") == ["solo", EXT]  # not masqueraded
    assert _ask(kube_lb, "ext", "172.31.0.240")[1] != EXT  # Cluster: masqueraded by the node


def test_the_tor_holds_ecmp_routes_over_the_announcing_nodes(kube_lb: RunningLab) -> None:
    routes = kube_lb.exec("tor", "ip", "route", "show", "198.51.100.2", check=True).stdout
    for ip in NODE_IPS.values():
        assert f"nexthop via {ip} dev eth0" in routes, routes
    local = kube_lb.exec("tor", "ip", "route", "show", "198.51.100.1", check=True).stdout
    assert local.startswith(f"198.51.100.1 via {NODE_IPS['w2']} dev eth0 proto bird"), local  # Local: w2 alone
    assert _ask(kube_lb, "out", "198.51.100.1") == ["solo", "192.168.50.2"]
    assert "198.51.100.2/32" in labkit("exec", kube_lb.name, "tor", "--", "birdc", "show", "route").stdout


def test_source_ranges_refuse_other_clients(kube_lb: RunningLab) -> None:
    assert _ask(kube_lb, "ext", "172.31.0.241")[0].startswith("echo-")
    assert kube_lb.exec("out", "socat", "-T1", "-", "TCP:172.31.0.241:80,connect-timeout=1").returncode != 0
    rules = kube_lb.exec("w1", "nft", "list", "table", "ip", "labkit-proxy", check=True).stdout
    assert "loadBalancerSourceRanges of service default/guarded: source not allowed" in rules
    assert _lb(kube_lb, "default/guarded") and not any(
        p.get("node_port") for p in kube_lb.service("default/guarded")["ports"])  # allocateLoadBalancerNodePorts


def test_external_ips_are_served(kube_lb: RunningLab) -> None:
    assert _ask(kube_lb, "ext", "203.0.113.10")[0].startswith("echo-")
    assert kube_lb.service("default/web-ext")["external_ips"] == ["203.0.113.10"]


def test_an_exhausted_pool_leaves_the_service_pending_with_the_reason(kube_lb: RunningLab) -> None:
    pending = _lb(kube_lb, "default/tiny-b")
    assert pending["ip"] is None and pending["pending"] == "no available IPs in pool tiny"
    table = labkit("status", "--name", kube_lb.name).stdout
    assert "lb <pending>: no available IPs in pool tiny" in table


def test_a_stopped_speaker_hands_over_with_gratuitous_arp_and_apply_restarts_it(kube_lb: RunningLab) -> None:
    ip = "172.31.0.240"
    first = _lb(kube_lb, "default/web-l2")["announcing_node"]
    _ask(kube_lb, "ext", ip)
    assert _neighbour(kube_lb, ip) == _mac(kube_lb, first)
    proc = announce.running(kube_lb.name, first)
    assert proc is not None
    processes.stop([proc])
    expected = next(n for n in _lb(kube_lb, "default/web-l2")["l2_candidates"] if n != first)
    new_mac = _mac(kube_lb, expected)
    deadline = time.monotonic() + FAILOVER_WITHIN
    while _neighbour(kube_lb, ip) != new_mac:  # the GARP moved the client's entry; no request was needed
        assert time.monotonic() < deadline, f"ext still has {_neighbour(kube_lb, ip)} for {ip}, not {expected}'s"
        time.sleep(0.02)
    assert _lb(kube_lb, "default/web-l2")["announcing_node"] == expected
    assert _ask(kube_lb, "ext", ip)[0].startswith("echo-")
    assert _status(kube_lb)["health"]["problems"] == [
        f"L2 speaker of node {first} is not running (labkit apply restarts it)"]
    labkit("apply", str(KUBE_LB), "--name", kube_lb.name)  # returns once every address is answered for
    assert _lb(kube_lb, "default/web-l2")["announcing_node"] == first
    assert _status(kube_lb)["health"]["ok"]


def test_apply_withdraws_a_removed_service_and_brings_it_back(kube_lb: RunningLab, tmp_path) -> None:
    """A Service gone from the file: its L2 address is answered by nobody, its /32 leaves the ToR."""
    (tmp_path / "workloads").mkdir()
    docs = (KUBE_LB.parent / "workloads" / "kube-lb.yaml").read_text().split("\n---\n")
    kept = [d for d in docs if "name: web-l2" not in d and "name: web-bgp" not in d]
    assert len(kept) == len(docs) - 2
    (tmp_path / "workloads" / "kube-lb.yaml").write_text("\n---\n".join(kept))
    (tmp_path / "kube-lb.yaml").write_text(KUBE_LB.read_text())
    labkit("apply", str(tmp_path / "kube-lb.yaml"), "--name", kube_lb.name)
    try:
        nodes = [n for n, entry in kube_lb.nodes().items() if entry["kind"] == "k8s-node"]
        assert "172.31.0.240" not in announce.announcing(kube_lb.name, nodes)
        assert "198.51.100.2" not in kube_lb.exec("tor", "ip", "route", check=True).stdout
        assert "198.51.100.1 via" in kube_lb.exec("tor", "ip", "route", check=True).stdout  # the others stay
    finally:
        labkit("apply", str(KUBE_LB), "--name", kube_lb.name)
    assert _lb(kube_lb, "default/web-l2")["announcing_node"] is not None
    assert "198.51.100.2" in kube_lb.exec("tor", "ip", "route", check=True).stdout
