"""labkit trace's pure parts: the trace table, nft monitor's lines, hops from events, targets, rendering."""
# ruff: noqa: E501  (nft monitor lines as nft prints them: one event a line)

from __future__ import annotations

import json

import pytest

from labkit.errors import LabkitError
from labkit.graph import render_graph
from labkit.trace import path, render, resolve
from labkit.trace.nftrace import Marker, Monitored, delete_text, end_text, parse_line, table_text

MARKER = Marker(token="0a1b2c3d", dscp=43, label=77, sport=45000)

# One namespace's monitor output, as nft 1.0.6 printed it for ext -> w2:30080 on kube-vxlan (shortened).
W2 = """\
trace id 01 ip labkit-trace probe-pre packet: iif "eth0" ip saddr 172.31.0.5 ip daddr 172.31.0.4 ip dscp 0x2b ip ttl 64 tcp sport 45000 tcp dport 30080 tcp flags == syn
trace id 01 ip labkit-trace probe-pre unknown rule handle 10 (verdict continue)
trace id 01 ip labkit-proxy services rule fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports (verdict goto external-GCGJ-default/web-nodeport/tcp/http)
trace id 01 ip labkit-proxy external-GCGJ-default/web-nodeport/tcp/http rule jump mark-for-masquerade comment "nodePort 30080/tcp of service default/web-nodeport:80" (verdict jump mark-for-masquerade)
trace id 01 ip labkit-proxy service-GCGJ-default/web-nodeport/tcp/http rule numgen random mod 3 vmap { 0 : goto endpoint-Y5KT-default/web-nodeport/tcp/http__10.244.0.4/8080 } comment "service default/web-nodeport:80/tcp" (verdict goto endpoint-Y5KT-default/web-nodeport/tcp/http__10.244.0.4/8080)
trace id 01 ip labkit-proxy endpoint-Y5KT-default/web-nodeport/tcp/http__10.244.0.4/8080 rule meta l4proto tcp dnat to 10.244.0.4:8080 comment "endpoint default/web-1 10.244.0.4:8080" (verdict accept)
trace id 01 ip labkit-trace seen-forward packet: iif "eth0" oif "flannel.1" ip saddr 172.31.0.5 ip daddr 10.244.0.4 ip dscp 0x2b ip ttl 63 tcp sport 45000 tcp dport 8080 tcp flags == syn
trace id 01 ip labkit-trace seen-forward policy accept meta mark 0x00004000
trace id 01 ip labkit-proxy masquerading rule masquerade fully-random comment "masquerade: marked by a service rule" (verdict accept)
trace id 01 ip labkit-trace seen-postrouting packet: iif "eth0" oif "flannel.1" ip saddr 10.244.2.0 ip daddr 10.244.0.4 ip dscp 0x2b ip ttl 63 tcp sport 5876 tcp dport 8080 tcp flags == syn
trace id 01 ip labkit-trace seen-postrouting policy accept
trace id 02 ip labkit-trace encap-out packet: oif "eth0" ip saddr 172.31.0.4 ip daddr 172.31.0.2 ip dscp cs0 ip ttl 64 udp sport 41000 udp dport 8472
trace id 02 ip labkit-trace encap-out unknown rule handle 16 (verdict continue)
trace id 03 ip labkit-trace reply-out packet: oif "eth0" ip saddr 172.31.0.4 ip daddr 172.31.0.5 ip dscp 0x37 ip ttl 64 icmp type redirect icmp code host-unreachable
trace id 03 ip labkit-trace reply-out unknown rule handle 14 (verdict continue)
trace id 04 ip labkit-trace reply-pre packet: iif "flannel.1" ip saddr 10.244.0.4 ip daddr 10.244.2.0 ip dscp cs0 ip ttl 63 tcp sport 8080 tcp dport 5876 tcp flags == 0x12
trace id 04 ip labkit-trace reply-pre unknown rule handle 11 (verdict continue)
trace id 04 ip labkit-trace seen-forward packet: iif "flannel.1" oif "eth0" ip saddr 10.244.0.4 ip daddr 172.31.0.5 ip dscp cs0 ip ttl 62 tcp sport 8080 tcp dport 45000 tcp flags == 0x12
trace id 04 ip labkit-trace seen-postrouting packet: iif "flannel.1" oif "eth0" ip saddr 172.31.0.4 ip daddr 172.31.0.5 ip dscp cs0 ip ttl 62 tcp sport 30080 tcp dport 45000 tcp flags == 0x12
"""
EXT = """\
trace id 11 ip labkit-trace probe-out packet: oif "eth0" ip saddr 172.31.0.5 ip daddr 172.31.0.4 ip dscp 0x2b ip ttl 64 tcp sport 45000 tcp dport 30080 tcp flags == syn
trace id 11 ip labkit-trace probe-out unknown rule handle 13 (verdict continue)
trace id 11 ip labkit-trace seen-postrouting packet: oif "eth0" ip saddr 172.31.0.5 ip daddr 172.31.0.4 ip dscp 0x2b ip ttl 64 tcp sport 45000 tcp dport 30080 tcp flags == syn
trace id 12 ip labkit-trace reply-pre packet: iif "eth0" ip saddr 172.31.0.4 ip daddr 172.31.0.5 ip dscp cs0 ip ttl 62 tcp sport 30080 tcp dport 45000 tcp flags == 0x12
trace id 12 ip labkit-trace reply-pre unknown rule handle 11 (verdict continue)
trace id 12 ip labkit-trace seen-input packet: iif "eth0" ip saddr 172.31.0.4 ip daddr 172.31.0.5 ip dscp cs0 ip ttl 62 tcp sport 30080 tcp dport 45000 tcp flags == 0x12
"""
DROP = """\
trace id 21 ip labkit-trace probe-pre packet: iif "veth1" ip saddr 10.244.0.5 ip daddr 10.244.0.2 ip dscp 0x2b ip ttl 64 tcp sport 45000 tcp dport 80 tcp flags == syn
trace id 21 ip labkit-trace probe-pre unknown rule handle 10 (verdict continue)
trace id 21 inet labkit-policy forward packet: iif "veth1" oif "veth2" ip saddr 10.244.0.5 ip daddr 10.244.0.2 ip dscp 0x2b ip ttl 63 tcp sport 45000 tcp dport 80 tcp flags == syn
trace id 21 inet labkit-policy forward rule ip daddr vmap @ingress-pods (verdict jump ingress-uwxnlp-x/a)
trace id 21 inet labkit-policy ingress-uwxnlp-x/a rule counter packets 0 bytes 0 drop comment "denied by NetworkPolicy x/deny (ingress of x/a): nothing allows it" (verdict drop)
"""


def _monitored(name: str, text: str) -> Monitored:
    events = [e for e in (parse_line(line) for line in text.splitlines()) if e is not None]
    return Monitored(name, events, text.splitlines())


def test_the_trace_table_marks_the_probe_its_reply_and_its_vxlan_packet():
    text = table_text(MARKER, "tcp")
    assert text.startswith("table ip labkit-trace {\n}\ndelete table ip labkit-trace\ntable ip labkit-trace {\n")
    assert 'comment "labkit trace 0a1b2c3d: temporary' in text
    assert "ip dscp 43 meta l4proto tcp ct state new ct label set 77 meta nftrace set 1" in text
    assert "ct direction reply ct label 77 meta nftrace set 1" in text
    assert "udp dport 8472 @th,248,6 43 meta nftrace set 1" in text  # the inner header's DSCP
    for hook in ("prerouting", "output", "input", "forward", "postrouting"):
        assert f"hook {hook} " in text
    assert delete_text(MARKER) == "table ip labkit-trace {\n}\ndelete table ip labkit-trace\n"
    assert end_text(MARKER) == "add chain ip labkit-trace end-0a1b2c3d\ndelete table ip labkit-trace\n"
    assert MARKER.end_marker == "add chain ip labkit-trace end-0a1b2c3d"
    assert MARKER.tos == 43 << 2
    with pytest.raises(ValueError):
        table_text(MARKER, "sctp")
    fresh = Marker.new()
    assert fresh.dscp % 4 == 3 and 64 <= fresh.label < 128 and 40000 <= fresh.sport < 60000


def test_monitor_lines_parse_into_events():
    rule = parse_line('trace id ab ip labkit-proxy masquerading rule masquerade fully-random comment "m" (verdict accept)')
    assert (rule.kind, rule.table, rule.chain, rule.verdict) == ("rule", "labkit-proxy", "masquerading", "accept")
    assert rule.rule == 'masquerade fully-random comment "m"'
    packet = parse_line(W2.splitlines()[0]).packet
    assert (packet.iif, packet.saddr, packet.daddr, packet.sport, packet.dport, packet.ttl) == (
        "eth0", "172.31.0.5", "172.31.0.4", 45000, 30080, 64)
    assert parse_line("trace id ab ip t c policy accept meta mark 0x00004000").verdict == "accept"
    assert parse_line("add table ip labkit-trace") is None


def test_hops_are_ordered_by_ttl_and_say_what_acted():
    probe, reply = path.build({"w2": _monitored("w2", W2), "ext": _monitored("ext", EXT)}, {})
    assert [h.name for h in probe.hops] == ["ext", "w2"]
    ext, w2 = probe.hops
    assert ext.outcome == "sent" and ext.iif is None and ext.oif == "eth0"
    assert (w2.iif, w2.oif, w2.outcome) == ("eth0", "flannel.1", "forwarded")
    assert w2.packet_in == "172.31.0.5:45000 -> 172.31.0.4:30080"
    assert w2.packet_out == "10.244.2.0:5876 -> 10.244.0.4:8080"  # DNAT and masquerade, as the kernel did them
    assert w2.route_query == {"daddr": "10.244.0.4", "saddr": "172.31.0.5", "iif": "eth0"}
    assert w2.encap == "vxlan 172.31.0.4 -> 172.31.0.2 udp/8472 via eth0"
    meanings = [r.meaning for r in w2.rules if r.meaning]
    assert meanings == [
        "service lookup: NodePort matched (default/web-nodeport/tcp/http)",
        "nodePort 30080/tcp of service default/web-nodeport:80: marked for masquerade",
        "service default/web-nodeport:80/tcp: picked endpoint 10.244.0.4:8080",
        "DNAT to endpoint default/web-1 10.244.0.4:8080",
        "masquerade: marked by a service rule",
    ]
    # the reply: the SYN-ACK, not the ICMP redirect w2 sent; back through w2 to ext
    assert [h.name for h in reply.hops] == ["w2", "ext"]
    assert reply.hops[0].iif == "flannel.1" and reply.hops[0].packet_out == "172.31.0.4:30080 -> 172.31.0.5:45000"
    assert reply.hops[1].outcome == "delivered"


def test_a_policy_drop_names_the_policy():
    probe, reply = path.build({"n1": _monitored("n1", DROP)}, {"n1": "node"})
    hop = probe.dropped
    assert hop is not None and hop.name == "n1" and hop.oif is None and not reply.hops
    assert hop.dropped_by == "dropped by NetworkPolicy x/deny (ingress of x/a): nothing allows it"


STATUS = {
    "name": "kube3", "dns": {"ip": "10.96.0.10", "domain": "cluster.local"},
    "nodes": [{"name": "cp", "kind": "k8s-node", "mgmt_ipv4": "172.31.0.2", "netns_path": "/run/netns/cp"},
              {"name": "w1", "kind": "k8s-node", "mgmt_ipv4": "172.31.0.3", "netns_path": "/run/netns/w1"},
              {"name": "sw", "kind": "bridge", "mgmt_ipv4": None, "netns_path": "/run/netns/sw"}],
    "pods": [{"namespace": "default", "name": "client", "node": "cp", "ip": "10.244.0.2", "netns_path": "/p/c"},
             {"namespace": "default", "name": "web-1", "node": "w1", "ip": "10.244.1.3", "netns_path": "/p/w1"},
             {"namespace": "default", "name": "idle", "node": "w1", "ip": "10.244.1.9", "netns_path": "/p/i"}],
    "services": [{"namespace": "default", "name": "web", "type": "NodePort", "cluster_ip": "10.96.0.20",
                  "ports": [{"port": 80, "protocol": "TCP", "node_port": 30080, "endpoints": ["10.244.1.3:8080"]}]},
                 {"namespace": "kube-system", "name": "kube-dns", "type": "ClusterIP", "cluster_ip": "10.96.0.10",
                  "ports": [{"port": 53, "protocol": "UDP", "endpoints": []}]}],
}


@pytest.mark.parametrize("dst", ["web", "web.default", "web.default.svc.cluster.local", "web:80", "10.96.0.20:80"])
def test_a_service_is_found_by_its_names_and_address(dst):
    target = resolve(STATUS, "default/client", dst)
    assert (target.address, target.port, target.protocol) == ("10.96.0.20", 80, "tcp")
    assert target.service == "default/web:80/tcp" and target.endpoints == ("default/web-1 10.244.1.3:8080",)
    # watched: the source first, the nodes (not the switch), the endpoints; not the idle pod
    assert list(target.namespaces) == ["default/client", "cp", "w1", "default/web-1"]
    assert target.kinds["cp"] == "node" and target.kinds["default/web-1"] == "pod"


def test_other_targets_and_their_errors():
    assert resolve(STATUS, "w1", "cp:30080").service == "default/web:80/tcp"
    assert resolve(STATUS, "default/client", "kube-dns.kube-system").protocol == "udp"
    assert resolve(STATUS, "cp", "default/web-1:8080").address == "10.244.1.3"
    assert resolve(STATUS, "cp", "w1", "icmp").port is None
    for src, dst, protocol, message in [
        ("default/nope", "web", None, "no node or pod 'default/nope'"),
        ("cp", "nothing", None, "is no pod, node, Service or IP address"),
        ("cp", "w1", None, "give a port"),
        ("cp", "web:99999", None, "not a port"),
        ("cp", "web", "sctp", "unknown protocol"),
    ]:
        with pytest.raises(LabkitError, match=message):
            resolve(STATUS, src, dst, protocol)


def _report() -> dict:
    probe, reply = path.build({"w2": _monitored("w2", W2), "ext": _monitored("ext", EXT)}, {})
    return {"lab": "kube3", "source": "ext", "destination": "cp:30080", "address": "172.31.0.2", "port": 30080,
            "protocol": "tcp", "service": "default/web:80/tcp", "endpoint": "default/web-1 10.244.1.3:8080",
            "service_endpoints": [], "result": {"open": True, "reason": "connected"}, "dropped": None,
            "probe": [h.as_dict() for h in probe.hops], "reply": [h.as_dict() for h in reply.hops]}


def test_renderings():
    report = _report()
    text = render(report, "text")
    assert text.startswith("trace kube3: ext -> cp:30080 (172.31.0.2:30080/tcp): open (connected)\n")
    assert "service default/web:80/tcp -> endpoint default/web-1 10.244.1.3:8080" in text
    assert "  2. w2 (node): in eth0, out flannel.1" in text and "encap  vxlan 172.31.0.4 -> 172.31.0.2" in text
    assert json.loads(render(report, "json"))["probe"][1]["oif"] == "flannel.1"
    mermaid = render(report, "mermaid")
    assert "flowchart LR" in mermaid and 'probe1 -->|"eth0 → eth0"| probe2' in mermaid
    with pytest.raises(LabkitError, match="unknown trace format"):
        render(report, "svg")


def test_the_html_picture_highlights_the_path():
    summary = {"name": "kube3", "runtime": "netns", "mgmt": {"subnet": "172.31.0.0/24", "host_access": False}, "links": [],
               "nodes": [{"name": n, "kind": k, "mgmt_ipv4": ip, "interfaces": []}
                         for n, k, ip in (("ext", "linux", "172.31.0.5"), ("w2", "k8s-node", "172.31.0.4"),
                                          ("cp", "k8s-node", "172.31.0.2"))],
               "pods": [], "services": []}
    page = render_graph(summary, "html", trace=_report())
    assert 'class="node kind-linux onpath" id=' in page and 'class="node kind-k8s-node onpath" id=' in page
    assert 'class="node kind-k8s-node" id=' in page  # cp: not on this path
    assert "trace: DNAT to endpoint default/web-1 10.244.0.4:8080" in page
    assert 'id="trace"' in page and 'data-mgmt-node="w2"' in page
    assert " onpath\"" not in render_graph(summary, "html") and "id=\"trace\"" not in render_graph(summary, "html")
