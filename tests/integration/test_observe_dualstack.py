"""verify, trace, status, graph and events over both families, on the shipped dual-stack cluster
(kube-dualstack.yaml, shared by the module, under both runtimes): `expect:` checks with IPv6 targets and
`family:` are met as the kernel answers them, a trace of an IPv6 pod -> Service packet shows the ip6
proxy's DNAT hop by hop, status JSON and the graph carry both families' addresses, and `labkit events`
reports an IPv6 address as it comes and goes (the kernel's own link-local ones not)."""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess

import pytest

from labkit import lab
from labkit.pytest_plugin import RunningLab, labkit_fixture

from .conftest import RUNTIMES, TOPOLOGIES, labkit
from .test_observe import EventStream

dualstack = labkit_fixture(TOPOLOGIES / "kube-dualstack.yaml", runtime=RUNTIMES, scope="module")

POD_V4, POD_V6 = ipaddress.ip_network("10.244.0.0/16"), ipaddress.ip_network("fd00:10:244::/56")
SVC_V6, MGMT_V6 = ipaddress.ip_network("fd00:10:96::/112"), ipaddress.ip_network("fd00:172:31::/64")


def _web_pod(running: RunningLab, node: str) -> tuple[str, dict]:
    return next((k, p) for k, p in running.pods().items() if k.startswith("default/web-") and p["node"] == node)


def _family(address: str | None) -> int:
    return ipaddress.ip_address(str(address)).version


def in_netns(running: RunningLab, target: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net={running.netns_path(target)}", *argv], capture_output=True, text=True,
                          timeout=30, check=False)


def test_verify_over_ipv6_addresses(dualstack: RunningLab) -> None:
    """Pods, nodes and Services reached at their IPv6 addresses (no name looked up over IPv6)."""
    web_key, web = _web_pod(dualstack, "w1")
    v6_cluster_ip = dualstack.service("default/web")["cluster_ips"][1]
    checks = [
        {"from": "default/client", "to": "web:80", "result": "open"},
        {"from": "default/client", "to": "web:80", "family": 4, "result": "open"},
        {"from": "default/client", "to": f"[{v6_cluster_ip}]:80", "result": "open"},
        {"from": "default/client", "to": f"{web_key}:8080", "family": 6, "result": "open"},
        {"from": "default/client", "to": web["ips"][1], "protocol": "icmp", "result": "open"},
        {"from": "default/client", "to": web_key, "protocol": "icmp", "family": 6, "result": "open"},
        {"from": "default/client", "to": "w1", "protocol": "icmp", "family": 6, "result": "open"},
        {"from": "default/client", "resolve": "web", "result": "10.96.0.0/16"},
        {"from": "ext", "to": "cp:22", "family": 6, "result": "closed"},
        {"from": "ext", "to": "w2", "protocol": "icmp", "family": 6, "result": "open"},
        {"from": "ext", "to": "fd00:172:31::77", "protocol": "icmp", "result": "closed"},  # nobody has it
        {"from": "w1", "to": "[fd00:10:244::2]:9", "result": "closed"},
    ]
    report = lab.verify_lab(dualstack.name, checks)
    assert report.ok, report.text()
    by_index = {r.index: r for r in report.results}
    # each check went over the family it asked for; a name without one over the preferred family first
    assert _family(by_index[0].address) == 4 and _family(by_index[1].address) == 4
    for i in (2, 3, 4, 5, 6, 8, 9, 10, 11):
        assert _family(by_index[i].address) == 6, by_index[i]
    assert by_index[3].address == web["ips"][1] and by_index[6].address == dualstack.nodes()["w1"]["mgmt_ipv6"]
    assert by_index[7].actual.startswith("10.96.")
    assert by_index[8].reason == "connection refused" and by_index[10].reason == "no echo reply in 1s"


def test_verify_names_over_ipv6(dualstack: RunningLab) -> None:
    """AAAA records and the cluster DNS reached over IPv6: a name asked for with family 6."""
    v6_cluster_ip = dualstack.service("default/web")["cluster_ips"][1]
    checks = [
        {"from": "default/client", "to": "web:80", "family": 6, "result": "open"},
        {"from": "default/client", "resolve": "web", "result": str(SVC_V6)},
        {"from": "default/client", "resolve": "web.default", "family": 6, "result": v6_cluster_ip},
        {"from": "default/client", "to": "[fd00:10:96::a]:53", "protocol": "udp", "result": "open"},
        {"from": "default/client", "to": "kube-dns.kube-system:53", "protocol": "udp", "family": 6, "result": "open"},
    ]
    report = lab.verify_lab(dualstack.name, checks)
    assert report.ok, report.text()
    web, _, named, dns_udp, dns_by_name = report.results
    assert web.address == v6_cluster_ip and named.addresses == (v6_cluster_ip,)
    assert dns_udp.address == "fd00:10:96::a" and _family(dns_by_name.address) == 6


def test_a_name_that_does_not_resolve_over_ipv6_is_closed(dualstack: RunningLab) -> None:
    report = lab.verify_lab(dualstack.name, [{"from": "default/client", "to": "ext", "protocol": "icmp",
                                              "family": 6, "result": "open"},
                                             {"from": "default/client", "to": "nope:80", "family": 6,
                                              "result": "closed"}])
    assert report.ok, report.text()
    assert "NXDOMAIN" in report.results[1].reason


def test_a_trace_of_an_ipv6_pod_to_service_packet_shows_the_ip6_dnat(dualstack: RunningLab) -> None:
    report = lab.trace(dualstack.name, "default/client", "web", family=6)
    assert report["result"]["open"], report["result"]
    assert report["family"] == 6 and ipaddress.ip_address(report["address"]) in SVC_V6
    assert report["service"] == "default/web:80/tcp"
    v6_endpoints = [e for e in report["service_endpoints"] if "[" in e]
    assert len(v6_endpoints) == len(report["service_endpoints"]) == 3  # the IPv6 ones alone
    assert report["endpoint"] in v6_endpoints
    chosen = report["endpoint"].split(" ")[-1]  # [fd00:10:244:N::M]:8080
    hops = report["probe"]
    assert hops[0]["name"] == "default/client" and hops[0]["outcome"] == "sent"
    assert hops[0]["packet_in"].startswith("[fd00:10:244::2]:") and f"[{report['address']}]:80" in hops[0]["packet_in"]
    assert hops[0]["route"].startswith("default via fd00:10:244::1 dev eth0")
    cp = next(h for h in hops if h["name"] == "cp")
    dnat = [r for r in cp["rules"] if (r["meaning"] or "").startswith("DNAT to endpoint ")]
    assert dnat and dnat[0]["table"] == "labkit-proxy" and dnat[0]["meaning"].endswith(chosen), cp["rules"]
    assert cp["packet_out"].endswith(f"-> {chosen}")
    assert hops[-1]["outcome"] == "delivered" and hops[-1]["name"] == report["endpoint"].split(" ")[0]
    if len(hops) > 3:  # the endpoint on another node: host-gw's IPv6 route via that node's IPv6 address
        assert " via fd00:172:31::" in cp["route"] and "dev eth0" in cp["route"], cp
    assert report["reply"][-1]["name"] == "default/client" and report["reply"][-1]["outcome"] == "delivered"
    for name in ("cp", "w1", "w2", "ext"):  # nothing of the trace is left
        assert "labkit-trace" not in in_netns(dualstack, name, "nft", "list", "tables").stdout


def test_a_ping_trace_over_ipv6_to_a_pod_on_another_node(dualstack: RunningLab) -> None:
    web_key, web = _web_pod(dualstack, "w1")
    report = lab.trace(dualstack.name, "default/client", web_key, "icmp", family=6)
    assert report["result"] == {"open": True, "reason": f"echo reply from {web['ips'][1]}"}
    assert [h["name"] for h in report["probe"]] == ["default/client", "cp", "w1", web_key]
    cp = report["probe"][1]
    assert cp["route"].startswith("fd00:10:244:1::/64 via fd00:172:31::3 dev eth0"), cp
    text = lab.render_trace(report, "text")
    assert f"default/client -> {web_key} ({web['ips'][1]}/icmp): open" in text


def test_status_json_has_both_families(dualstack: RunningLab) -> None:
    status = json.loads(labkit("status", "--name", dualstack.name, "--format", "json").stdout)
    assert status["cluster"] == {"ip_families": ["IPv4", "IPv6"], "pod_cidrs": ["10.244.0.0/16", "fd00:10:244::/56"],
                                 "service_cidrs": ["10.96.0.0/16", "fd00:10:96::/112"]}
    assert status["dns"]["ip"] == "10.96.0.10" and status["dns"]["ips"] == ["10.96.0.10", "fd00:10:96::a"]
    nodes = {n["name"]: n for n in status["nodes"]}
    for name in ("cp", "w1", "w2", "ext"):
        assert ipaddress.ip_address(nodes[name]["mgmt_ipv6"]) in MGMT_V6
        eth0 = next(i for i in nodes[name]["interfaces"] if i["name"] == "eth0")
        assert eth0["ipv4"] == [f"{nodes[name]['mgmt_ipv4']}/24"] and eth0["ipv6"] == [f"{nodes[name]['mgmt_ipv6']}/64"]
    assert nodes["w1"]["pod_cidrs"] == ["10.244.1.0/24", "fd00:10:244:1::/64"]
    assert nodes["w1"]["pod_cidr"] == "10.244.1.0/24" and nodes["ext"]["pod_cidrs"] == []
    assert status["mgmt"]["subnet6"] == str(MGMT_V6)
    for pod in status["pods"]:
        v4, v6 = pod["ips"]
        if pod.get("host_network"):  # the node's own addresses, both families
            assert pod["ip"] == v4 and [v4, v6] == [nodes[pod["node"]]["mgmt_ipv4"], nodes[pod["node"]]["mgmt_ipv6"]]
            continue
        assert pod["ip"] == v4 and ipaddress.ip_address(v4) in POD_V4 and ipaddress.ip_address(v6) in POD_V6
        node_cidrs = [ipaddress.ip_network(c) for c in nodes[pod["node"]]["pod_cidrs"]]
        assert all(any(ipaddress.ip_address(ip) in c for c in node_cidrs) for ip in pod["ips"]), pod
    web = next(s for s in status["services"] if s["name"] == "web")
    assert web["cluster_ips"][0] == web["cluster_ip"] and ipaddress.ip_address(web["cluster_ips"][1]) in SVC_V6


def test_the_graph_labels_both_families(dualstack: RunningLab) -> None:
    text = labkit("graph", "--name", dualstack.name, "--format", "mermaid").stdout
    for pod in dualstack.pods().values():
        assert f"{pod['ips'][0]} {pod['ips'][1]}" in text, pod
    for node in ("cp", "w1", "w2"):
        assert "pods " + ", ".join(dualstack.nodes()[node]["pod_cidrs"]) in text
    assert f"{dualstack.nodes()['ext']['mgmt_ipv6']}/64" in text and "mgmt 172.31.0.0/24 fd00:172:31::/64" in text
    web = dualstack.service("default/web")
    assert " ".join(web["cluster_ips"]) in text


def test_events_report_an_ipv6_address_and_not_the_kernels_link_local_ones(dualstack: RunningLab) -> None:
    stream = EventStream(dualstack.name)
    try:
        for argv in (["ip", "link", "add", "obs6a", "type", "veth", "peer", "name", "obs6b"],
                     ["ip", "link", "set", "obs6a", "up"], ["ip", "link", "set", "obs6b", "up"],
                     ["ip", "-6", "addr", "add", "fd00:99::1/64", "dev", "obs6a", "nodad"]):
            done = in_netns(dualstack, "w2", *argv)
            assert done.returncode == 0, done.stderr
        seen = stream.expect({"where": "w2", "kind": "address", "action": "added", "address": "fd00:99::1/64",
                              "interface": "obs6a"})
        assert in_netns(dualstack, "w2", "ip", "link", "del", "obs6a").returncode == 0
        seen += stream.expect({"where": "w2", "kind": "address", "action": "removed", "address": "fd00:99::1/64"})
        seen += stream.expect({"where": "w2", "kind": "link", "action": "removed", "interface": "obs6b"})
        assert any(e["kind"] == "route" and e["dst"] == "fd00:99::/64" for e in seen), seen
        # both veths came up, so the kernel gave each an fe80:: address and route: not news
        assert not [e for e in seen if "fe80" in json.dumps(e)], seen
    finally:
        in_netns(dualstack, "w2", "ip", "link", "del", "obs6a")
        if stream.proc.poll() is None:
            stream.proc.kill()
            stream.proc.wait()
        for pipe in (stream.proc.stdout, stream.proc.stderr):
            if pipe:
                pipe.close()


@pytest.mark.parametrize("dst, message", [
    ("fd00:10:96::a:53", r"\[fd00:10:96::a\]:53"),
    ("[fd00:10:96::a]53", r"after '\]' comes ':PORT'"),
])
def test_a_malformed_ipv6_destination_is_one_clear_error(dualstack: RunningLab, dst: str, message: str) -> None:
    done = labkit("trace", dualstack.name, "default/client", dst, check=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert re.search(message, done.stderr), done.stderr


def test_the_shipped_files_own_expectations_hold_over_both_families(dualstack: RunningLab) -> None:
    """`labkit verify` of kube-dualstack.yaml as shipped: its checks name both families (NodePorts on
    IPv6 node addresses, AAAA, the DNS Service's IPv6 ClusterIP), and every one is as expected."""
    from labkit.verify import load_expects

    expects = load_expects(dualstack.topology)
    report = lab.verify_lab(dualstack.name, expects)
    assert report.ok, report.text()
    families = {_family(r.address) for r in report.results if r.address}
    assert families == {4, 6} and len(report.results) == len(expects) >= 12
