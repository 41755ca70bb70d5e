"""Backend bgp (Calico's model) in real labs: BIRD per node, routes from BGP, a ToR, withdrawal, restart.

kube-bgp.yaml is up once per runtime for the module; the test that stops a daemon puts it back
(through `labkit apply`, which is what it tests) before the next one reads the lab.
"""

from __future__ import annotations

import ipaddress
import json
import time

import pytest

from labkit import bgp, lab, processes
from labkit.pytest_plugin import RunningLab, labkit_fixture

from .conftest import ROOT, RUNTIMES, TOPOLOGIES, labkit

KUBE_BGP = TOPOLOGIES / "kube-bgp.yaml"
REFLECTORS = ROOT / "tests" / "topologies" / "good" / "bgp-route-reflectors.yaml"
K8S_NODES = ("cp", "w1", "w2")
POD_CIDRS = {"cp": "10.244.0.0/24", "w1": "10.244.1.0/24", "w2": "10.244.2.0/24"}
NODE_IPS = {"cp": "172.31.0.2", "w1": "172.31.0.3", "w2": "172.31.0.4"}
WITHDRAW_WITHIN = 3 * bgp.TIMERS.hold  # a daemon that stops says so at once; the hold time is the fallback

kube_bgp = labkit_fixture(KUBE_BGP, runtime=RUNTIMES, scope="module")


def _routes(running: RunningLab, node: str) -> dict[str, str]:
    """The node's kernel routes: destination -> the rest of the `ip route` line."""
    found = {}
    for line in running.exec(node, "ip", "route", check=True).stdout.splitlines():
        words = line.split()
        dst = words[1] if words[0] in ("blackhole", "unreachable") else words[0]
        found[dst] = line
    return found


def test_pod_routes_between_nodes_come_from_bird(kube_bgp: RunningLab) -> None:
    for node in K8S_NODES:
        routes = _routes(kube_bgp, node)
        for other in K8S_NODES:
            line = routes[POD_CIDRS[other]]
            if other == node:  # its own block: a blackhole, as Calico installs; the pods' /32s are more specific
                assert line.startswith("blackhole") and "proto bird" in line, line
            else:
                assert f"via {NODE_IPS[other]} dev eth0 proto bird" in line, line
        assert "proto bird" in routes["192.168.50.0/24"]  # the outside network, announced by the ToR


def test_the_tor_learned_every_pod_cidr(kube_bgp: RunningLab) -> None:
    routes = _routes(kube_bgp, "tor")
    for node, cidr in POD_CIDRS.items():
        assert f"via {NODE_IPS[node]} dev eth0 proto bird" in routes[cidr]


def test_the_topology_expectations_hold(kube_bgp: RunningLab) -> None:
    report = lab.verify_lab(kube_bgp.name)
    assert report.ok, report


def test_the_outside_host_reaches_a_pod_by_its_address_and_the_pod_sees_its_address(kube_bgp: RunningLab) -> None:
    echo = next(p for name, p in kube_bgp.pods().items() if name.startswith("default/echo-") and p["node"] == "w1")
    answer = kube_bgp.exec("ext", "socat", "-T3", "-", f"TCP:{echo['ip']}:8080", check=True).stdout.split()
    assert answer == [echo["name"], "192.168.50.2"]  # routed through the ToR, no address translation


def test_pods_leave_the_cluster_by_their_own_address(kube_bgp: RunningLab) -> None:
    """masquerade: false (Calico's natOutgoing: false): no masquerade table in any node."""
    for node in K8S_NODES:
        tables = kube_bgp.exec(node, "nft", "list", "tables", check=True).stdout
        assert "labkit-cni" not in tables, tables
    client = kube_bgp.pod_ip("default/client")
    # the ToR returns the reply to the pod's own address: ext -> client's node through the ToR
    assert kube_bgp.exec("ext", "ping", "-c1", "-W3", client).returncode == 0


def test_status_shows_every_session_established_and_the_learned_routes(kube_bgp: RunningLab) -> None:
    found = json.loads(labkit("status", "--name", kube_bgp.name, "--format", "json").stdout)
    nodes = {n["name"]: n for n in found["nodes"]}
    assert "bgp" not in nodes["ext"]
    w1 = nodes["w1"]["bgp"]
    assert (w1["asn"], w1["router_id"], w1["role"]) == (64512, "172.31.0.3", "node")
    assert [(s["peer"], s["asn"], s["state"]) for s in w1["sessions"]] == [
        ("cp", 64512, "Established"), ("w2", 64512, "Established"), ("tor", 65000, "Established")]
    learned = {r["prefix"]: r for r in w1["routes"] if r["primary"]}
    assert learned["10.244.2.0/24"]["via"] == [NODE_IPS["w2"]] and learned["10.244.2.0/24"]["protocol"] == "node_w2"
    assert learned["10.244.1.0/24"]["type"] == "blackhole"
    assert w1["timers"]["hold"] == bgp.TIMERS.hold and w1["timers"]["graceful_restart"] is False
    tor = nodes["tor"]["bgp"]
    assert tor["role"] == "router" and all(s["state"] == "Established" for s in tor["sessions"])
    table = labkit("status", "--name", kube_bgp.name).stdout
    assert "tor AS65000 Established" in table and w1["socket"] in table


def test_birdc_through_exec_finds_the_nodes_daemon(kube_bgp: RunningLab) -> None:
    proc = labkit("exec", kube_bgp.name, "w2", "--", "birdc", "show", "route", "10.244.0.0/24")
    assert "10.244.0.0/24" in proc.stdout and "node_cp" in proc.stdout


def _until(condition, within: float, what: str) -> None:
    """Poll a condition the lab reaches by itself (BGP withdrawal), failing with `what` after `within` s."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {within:.0f} s")
        time.sleep(0.05)


def test_a_stopped_daemon_is_withdrawn_and_apply_starts_it_again(kube_bgp: RunningLab) -> None:
    files = bgp.files_of(kube_bgp.name, "w2")
    assert bgp.stop(files)
    gone = POD_CIDRS["w2"]
    _until(lambda: all(gone not in _routes(kube_bgp, n) for n in ("cp", "w1", "tor")), WITHDRAW_WITHIN,
           f"{gone} was not withdrawn from cp, w1 and tor")
    assert POD_CIDRS["w2"] not in _routes(kube_bgp, "w2")  # its own blackhole went with it
    problems = lab.status(kube_bgp.name)[0]["health"]["problems"]
    assert problems == ["BGP daemon of node w2 is not running (labkit apply restarts it)"]

    labkit("apply", str(KUBE_BGP), "--name", kube_bgp.name)  # returns once routes converged again
    for node in ("cp", "w1", "tor"):
        assert f"via {NODE_IPS['w2']} dev eth0 proto bird" in _routes(kube_bgp, node)[gone]
    found = lab.status(kube_bgp.name)[0]
    assert found["health"] == {"ok": True, "problems": []}


def test_apply_leaves_running_daemons_running(kube_bgp: RunningLab) -> None:
    before = {n: bgp.running(bgp.files_of(kube_bgp.name, n)) for n in (*K8S_NODES, "tor")}
    labkit("apply", str(KUBE_BGP), "--name", kube_bgp.name)
    assert {n: bgp.running(bgp.files_of(kube_bgp.name, n)) for n in before} == before


def test_route_reflectors_carry_routes_between_clients_and_down_leaves_nothing(labkit_lab_factory) -> None:
    running = labkit_lab_factory(REFLECTORS)
    report = lab.verify_lab(running.name)
    assert report.ok, report
    client = {n["name"]: n for n in lab.status(running.name)[0]["nodes"]}["w2"]["bgp"]
    assert [(s["name"], s["state"]) for s in client["sessions"]] == [("rr_cp", "Established"),
                                                                     ("rr_w1", "Established")]
    w3_block = ipaddress.ip_network("10.244.3.0/24")
    reflected = [r for r in client["routes"] if r["prefix"] == str(w3_block)]
    assert {r["protocol"] for r in reflected} == {"rr_cp", "rr_w1"}  # from both reflectors, not from w3
    assert "via 172.31.0.5 dev eth0 proto bird" in _routes(running, "w2")[str(w3_block)]
    daemons = [bgp.running(bgp.files_of(running.name, n)) for n in ("cp", "w1", "w2", "w3")]
    assert all(daemons)
    assert lab.down(running.name)
    assert lab.leftovers(running.name) == []
    assert not any(d is not None and processes.is_running(d) for d in daemons)
