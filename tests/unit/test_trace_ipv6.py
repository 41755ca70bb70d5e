"""labkit trace over IPv6: the inet trace table, ip6 fields of nft monitor's lines, hops, DNAT to a
bracketed endpoint, targets of a dual-stack lab, and the headline."""
# ruff: noqa: E501  (nft monitor lines as nft prints them: one event a line)

from __future__ import annotations

import pytest

from labkit.errors import LabkitError
from labkit.trace import _chosen_endpoint, path, render, resolve
from labkit.trace.nftrace import Marker, Monitored, delete_text, end_text, parse_line, table_text
from labkit.trace.target import endpoint_address, split_destination

MARKER6 = Marker(token="0a1b2c3d", dscp=43, label=77, sport=45000, family=6)

# default/client on cp -> Service web's IPv6 ClusterIP fd00:10:96::14:80, DNAT to default/web-1 on w1
# (host-gw: routed over the nodes' links), in the shape nft 1.0.6 prints an IPv6 packet (the trace table
# inet, the proxy's ip6; a chain name writes the endpoint's ':' as '.').
CLIENT = """\
trace id 31 inet labkit-trace probe-out packet: oif "eth0" ip6 saddr fd00:10:244::2 ip6 daddr fd00:10:96::14 ip6 dscp 0x2b ip6 ecn not-ect ip6 hoplimit 64 ip6 flowlabel 123 ip6 nexthdr tcp ip6 length 40 tcp sport 45000 tcp dport 80 tcp flags == syn tcp window 64800
trace id 31 inet labkit-trace probe-out rule ip6 dscp 0x2b meta l4proto tcp ct state new ct label set 77 meta nftrace set 1 (verdict continue)
trace id 31 inet labkit-trace seen-postrouting packet: oif "eth0" ip6 saddr fd00:10:244::2 ip6 daddr fd00:10:96::14 ip6 dscp 0x2b ip6 ecn not-ect ip6 hoplimit 64 ip6 flowlabel 123 ip6 nexthdr tcp ip6 length 40 tcp sport 45000 tcp dport 80 tcp flags == syn tcp window 64800
trace id 32 inet labkit-trace reply-pre packet: iif "eth0" ip6 saddr fd00:10:96::14 ip6 daddr fd00:10:244::2 ip6 dscp 0x00 ip6 ecn not-ect ip6 hoplimit 62 ip6 flowlabel 9 ip6 nexthdr tcp ip6 length 40 tcp sport 80 tcp dport 45000 tcp flags == 0x12 tcp window 64260
trace id 32 inet labkit-trace reply-pre rule ct direction reply ct label 77 meta nftrace set 1 (verdict continue)
trace id 32 inet labkit-trace seen-input packet: iif "eth0" ip6 saddr fd00:10:96::14 ip6 daddr fd00:10:244::2 ip6 dscp 0x00 ip6 ecn not-ect ip6 hoplimit 62 ip6 flowlabel 9 ip6 nexthdr tcp ip6 length 40 tcp sport 80 tcp dport 45000 tcp flags == 0x12 tcp window 64260
"""
CP = """\
trace id 41 inet labkit-trace probe-pre packet: iif "veth-client" ether saddr 42:de:1f:ee:64:c7 ether daddr 2e:b1:46:df:16:14 ip6 saddr fd00:10:244::2 ip6 daddr fd00:10:96::14 ip6 dscp 0x2b ip6 ecn not-ect ip6 hoplimit 64 ip6 flowlabel 123 ip6 nexthdr tcp ip6 length 40 tcp sport 45000 tcp dport 80 tcp flags == syn tcp window 64800
trace id 41 inet labkit-trace probe-pre rule ip6 dscp 0x2b meta l4proto tcp ct state new ct label set 77 meta nftrace set 1 (verdict continue)
trace id 41 ip6 labkit-proxy services rule ip6 daddr . meta l4proto . th dport vmap @service-ips-v6 (verdict goto service-ABCD-default/web/tcp/http)
trace id 41 ip6 labkit-proxy service-ABCD-default/web/tcp/http rule numgen random mod 1 vmap { 0 : goto endpoint-XY12-default/web/tcp/http__fd00.10.244.1..3/8080 } comment "service default/web:80/tcp" (verdict goto endpoint-XY12-default/web/tcp/http__fd00.10.244.1..3/8080)
trace id 41 ip6 labkit-proxy endpoint-XY12-default/web/tcp/http__fd00.10.244.1..3/8080 rule meta l4proto tcp dnat to [fd00:10:244:1::3]:8080 comment "endpoint default/web-1 [fd00:10:244:1::3]:8080" (verdict accept)
trace id 41 inet labkit-trace seen-forward packet: iif "veth-client" oif "eth1" ip6 saddr fd00:10:244::2 ip6 daddr fd00:10:244:1::3 ip6 dscp 0x2b ip6 ecn not-ect ip6 hoplimit 63 ip6 flowlabel 123 ip6 nexthdr tcp ip6 length 40 tcp sport 45000 tcp dport 8080 tcp flags == syn tcp window 64800
trace id 41 inet labkit-trace seen-postrouting packet: iif "veth-client" oif "eth1" ip6 saddr fd00:10:244::2 ip6 daddr fd00:10:244:1::3 ip6 dscp 0x2b ip6 ecn not-ect ip6 hoplimit 63 ip6 flowlabel 123 ip6 nexthdr tcp ip6 length 40 tcp sport 45000 tcp dport 8080 tcp flags == syn tcp window 64800
trace id 42 inet labkit-trace reply-out packet: oif "eth1" ip6 saddr fd00:172:31::2 ip6 daddr fd00:10:244::2 ip6 dscp 0x00 ip6 hoplimit 255 ip6 nexthdr ipv6-icmp icmpv6 type nd-redirect icmpv6 code no-route
trace id 42 inet labkit-trace reply-out rule ct direction reply ct label 77 meta nftrace set 1 (verdict continue)
"""
W1 = """\
trace id 51 inet labkit-trace probe-pre packet: iif "eth1" ip6 saddr fd00:10:244::2 ip6 daddr fd00:10:244:1::3 ip6 dscp 0x2b ip6 ecn not-ect ip6 hoplimit 62 ip6 flowlabel 123 ip6 nexthdr tcp ip6 length 40 tcp sport 45000 tcp dport 8080 tcp flags == syn tcp window 64800
trace id 51 inet labkit-trace probe-pre rule ip6 dscp 0x2b meta l4proto tcp ct state new ct label set 77 meta nftrace set 1 (verdict continue)
trace id 51 inet labkit-trace seen-forward packet: iif "eth1" oif "veth-web-1" ip6 saddr fd00:10:244::2 ip6 daddr fd00:10:244:1::3 ip6 dscp 0x2b ip6 hoplimit 61 ip6 nexthdr tcp tcp sport 45000 tcp dport 8080 tcp flags == syn
trace id 51 inet labkit-trace seen-postrouting packet: iif "eth1" oif "veth-web-1" ip6 saddr fd00:10:244::2 ip6 daddr fd00:10:244:1::3 ip6 dscp 0x2b ip6 hoplimit 61 ip6 nexthdr tcp tcp sport 45000 tcp dport 8080 tcp flags == syn
"""
WEB = """\
trace id 61 inet labkit-trace probe-pre packet: iif "eth0" ip6 saddr fd00:10:244::2 ip6 daddr fd00:10:244:1::3 ip6 dscp 0x2b ip6 hoplimit 60 ip6 nexthdr tcp tcp sport 45000 tcp dport 8080 tcp flags == syn
trace id 61 inet labkit-trace probe-pre rule ip6 dscp 0x2b meta l4proto tcp ct state new ct label set 77 meta nftrace set 1 (verdict continue)
trace id 61 inet labkit-trace seen-input packet: iif "eth0" ip6 saddr fd00:10:244::2 ip6 daddr fd00:10:244:1::3 ip6 dscp 0x2b ip6 hoplimit 60 ip6 nexthdr tcp tcp sport 45000 tcp dport 8080 tcp flags == syn
"""
PING = 'trace id 98b9623f inet labkit-trace probe-pre packet: iif "obsx-vb" ip6 saddr fd00:99::1 ip6 daddr fd00:99::2 ip6 dscp 0x07 ip6 ecn not-ect ip6 hoplimit 64 ip6 flowlabel 681778 ip6 nexthdr ipv6-icmp ip6 length 10 icmpv6 type echo-request icmpv6 code no-route icmpv6 parameter-problem 305397761 @th,64,16 0x6869'


def _monitored(name: str, text: str) -> Monitored:
    events = [e for e in (parse_line(line) for line in text.splitlines()) if e is not None]
    return Monitored(name, events, text.splitlines())


def test_an_ipv6_probe_is_marked_from_an_inet_table():
    text = table_text(MARKER6, "tcp")
    assert text.startswith("table inet labkit-trace {\n}\ndelete table inet labkit-trace\ntable inet labkit-trace {\n")
    assert "ip6 dscp 43 meta l4proto tcp ct state new ct label set 77 meta nftrace set 1" in text
    assert "ip dscp" not in text
    # the vxlan packet carrying it: inner ethertype IPv6, then the traffic class's DSCP bits
    assert "udp dport 8472 @th,224,16 0x86dd @th,244,6 43 meta nftrace set 1" in text
    assert "meta l4proto ipv6-icmp ct state new" in table_text(MARKER6, "icmp")
    assert end_text(MARKER6) == "add chain inet labkit-trace end-0a1b2c3d\ndelete table inet labkit-trace\n"
    assert MARKER6.end_marker == "add chain inet labkit-trace end-0a1b2c3d"
    assert delete_text(MARKER6) == "table inet labkit-trace {\n}\ndelete table inet labkit-trace\n"
    # a trace killed half way may have left either family's table: without a marker, both go
    assert delete_text() == ("table ip labkit-trace {\n}\ndelete table ip labkit-trace\n"
                             "table inet labkit-trace {\n}\ndelete table inet labkit-trace\n")
    assert Marker.new(6).nft_family == "inet" and Marker.new().nft_family == "ip"


def test_ipv6_fields_of_a_packet():
    packet = parse_line(CP.splitlines()[0]).packet
    assert (packet.iif, packet.saddr, packet.daddr, packet.sport, packet.dport, packet.ttl, packet.proto,
            packet.dscp) == ("veth-client", "fd00:10:244::2", "fd00:10:96::14", 45000, 80, 64, "tcp", "0x2b")
    assert packet.endpoints() == "[fd00:10:244::2]:45000 -> [fd00:10:96::14]:80"
    ping = parse_line(PING).packet
    assert (ping.proto, ping.flags, ping.ttl, ping.saddr) == ("icmpv6", "echo-request", 64, "fd00:99::1")
    assert ping.endpoints() == "fd00:99::1 -> fd00:99::2"
    event = parse_line(CP.splitlines()[4])
    assert event.family == "ip6" and event.rule.endswith('comment "endpoint default/web-1 [fd00:10:244:1::3]:8080"')


def test_an_ipv6_path_through_a_service():
    monitored = {"default/client": _monitored("default/client", CLIENT), "cp": _monitored("cp", CP),
                 "w1": _monitored("w1", W1), "default/web-1": _monitored("default/web-1", WEB)}
    kinds = {"default/client": "pod", "cp": "node", "w1": "node", "default/web-1": "pod"}
    probe, reply = path.build(monitored, kinds)
    assert [h.name for h in probe.hops] == ["default/client", "cp", "w1", "default/web-1"]
    client, cp, w1, web = probe.hops
    assert client.outcome == "sent" and web.outcome == "delivered"
    assert cp.packet_in == "[fd00:10:244::2]:45000 -> [fd00:10:96::14]:80"
    assert cp.packet_out == "[fd00:10:244::2]:45000 -> [fd00:10:244:1::3]:8080"
    assert cp.route_query == {"daddr": "fd00:10:244:1::3", "saddr": "fd00:10:244::2", "iif": "veth-client"}
    meanings = [r.meaning for r in cp.rules if r.meaning]
    assert meanings == ["service lookup: ClusterIP matched (default/web/tcp/http)",
                        "service default/web:80/tcp: picked endpoint [fd00:10:244:1::3]:8080",
                        "DNAT to endpoint default/web-1 [fd00:10:244:1::3]:8080"]
    # the ICMPv6 redirect cp sent is no reply; the SYN-ACK is
    assert [h.name for h in reply.hops] == ["default/client"] and reply.hops[0].outcome == "delivered"
    target = resolve(STATUS, "default/client", "web", family=6)
    assert _chosen_endpoint(probe, target) == "default/web-1 [fd00:10:244:1::3]:8080"


STATUS = {
    "name": "ds", "dns": {"ip": "10.96.0.10", "ips": ["10.96.0.10", "fd00:10:96::a"], "domain": "cluster.local"},
    "nodes": [{"name": "cp", "kind": "k8s-node", "mgmt_ipv4": "172.31.0.2", "mgmt_ipv6": "fd00:172:31::2",
               "netns_path": "/run/netns/cp"},
              {"name": "w1", "kind": "k8s-node", "mgmt_ipv4": "172.31.0.3", "mgmt_ipv6": "fd00:172:31::3",
               "netns_path": "/run/netns/w1"},
              {"name": "r6", "kind": "linux", "mgmt_ipv4": None, "mgmt_ipv6": "fd00:172:31::9",
               "netns_path": "/run/netns/r6"}],
    "pods": [{"namespace": "default", "name": "client", "node": "cp", "ip": "10.244.0.2",
              "ips": ["10.244.0.2", "fd00:10:244::2"], "netns_path": "/p/c"},
             {"namespace": "default", "name": "web-1", "node": "w1", "ip": "10.244.1.3",
              "ips": ["10.244.1.3", "fd00:10:244:1::3"], "netns_path": "/p/w1"},
             {"namespace": "default", "name": "v4", "node": "w1", "ip": "10.244.1.9", "netns_path": "/p/v4"}],
    "services": [{"namespace": "default", "name": "web", "type": "NodePort", "cluster_ip": "10.96.0.20",
                  "cluster_ips": ["10.96.0.20", "fd00:10:96::14"],
                  "ports": [{"port": 80, "protocol": "TCP", "node_port": 30080,
                             "endpoints": ["10.244.1.3:8080", "[fd00:10:244:1::3]:8080"]}]}],
}


@pytest.mark.parametrize("dst, family", [("web", 6), ("web.default:80", 6), ("[fd00:10:96::14]:80", None),
                                         ("[fd00:10:96::14]:80", 6)])
def test_the_ipv6_clusterip_of_a_dual_stack_service(dst, family):
    target = resolve(STATUS, "default/client", dst, family=family)
    assert (target.address, target.port, target.protocol) == ("fd00:10:96::14", 80, "tcp")
    assert target.service == "default/web:80/tcp"
    assert target.endpoints == ("default/web-1 [fd00:10:244:1::3]:8080",)  # the probe's family's endpoints
    assert list(target.namespaces) == ["default/client", "cp", "w1", "r6", "default/web-1"]


def test_without_a_family_the_primary_addresses_as_before():
    target = resolve(STATUS, "default/client", "web")
    assert target.address == "10.96.0.20" and target.endpoints == ("default/web-1 10.244.1.3:8080",)
    assert resolve(STATUS, "cp", "default/web-1:8080").address == "10.244.1.3"
    assert resolve(STATUS, "cp", "w1", "icmp").address == "172.31.0.3"
    assert resolve(STATUS, "cp", "r6", "icmp").address == "fd00:172:31::9"  # a node with IPv6 mgmt alone


def test_ipv6_addresses_of_pods_nodes_and_nodeports():
    assert resolve(STATUS, "cp", "default/web-1:8080", family=6).address == "fd00:10:244:1::3"
    assert resolve(STATUS, "cp", "w1", "icmp", family=6).address == "fd00:172:31::3"
    nodeport = resolve(STATUS, "cp", "[fd00:172:31::3]:30080")
    assert nodeport.service == "default/web:80/tcp" and nodeport.endpoints == ("default/web-1 [fd00:10:244:1::3]:8080",)
    ping = resolve(STATUS, "cp", "fd00:10:244:1::3", "icmp")
    assert (ping.address, ping.port) == ("fd00:10:244:1::3", None)
    assert "default/web-1" in ping.namespaces  # the pod with that address is watched


@pytest.mark.parametrize("src, dst, family, message", [
    ("cp", "default/v4:80", 6, r"pod default/v4 has no IPv6 address \(it has 10.244.1.9\)"),
    ("cp", "r6", 4, r"node r6 has no IPv4 address \(it has fd00:172:31::9\)"),
    ("cp", "10.96.0.20:80", 6, "10.96.0.20 is an IPv4 address, not IPv6"),
    ("cp", "web", 5, "unknown address family 5; valid: 4, 6"),
    # a bare IPv6 address: the whole of it is the address
    ("cp", "fd00:10:96::14:80", None, r"give a port to trace tcp to: \[fd00:10:96::14:80\]:PORT; if :80 is the port, "
                                      r"\[fd00:10:96::14\]:80 \(or --protocol icmp\)"),
    ("cp", "[fd00:10:96::14]80", None, r"after '\]' comes ':PORT'"),
    ("cp", "[fd00::zz]:80", None, r"is not \[IPv6 address\]:PORT"),
    ("cp", "fd00::zz:80", None, "is not an IPv6 address: with a port, write it in brackets"),
    ("cp", "[fd00::1]:0", None, "not a port"),
])
def test_bad_ipv6_destinations(src, dst, family, message):
    with pytest.raises(LabkitError, match=message):
        resolve(STATUS, src, dst, family=family)


def test_dnat_in_an_inet_table_names_its_family():
    assert path.DNAT.search("meta l4proto tcp dnat ip6 to [fd00::5]:80").group(1) == "[fd00::5]:80"
    assert path.DNAT.search("meta l4proto tcp dnat ip to 10.0.0.5:80").group(1) == "10.0.0.5:80"
    assert path.meaning("labkit-proxy", "x", "dnat ip6 to [fd00::5]:80", "accept") == "DNAT to [fd00::5]:80"


def test_destination_and_endpoint_forms():
    assert split_destination("[fd00::1]:80") == ("fd00::1", 80)
    assert split_destination("[FD00:0::1]") == ("fd00::1", None)
    assert split_destination("fd00::1") == ("fd00::1", None)
    assert split_destination("web:80") == ("web", 80) and split_destination("10.0.0.1") == ("10.0.0.1", None)
    assert endpoint_address("[fd00::5]:80") == ("fd00::5", "80")
    assert endpoint_address("10.244.1.3:8080") == ("10.244.1.3", "8080")


def test_the_headline_brackets_an_ipv6_address():
    report = {"lab": "ds", "source": "default/client", "destination": "web", "address": "fd00:10:96::14",
              "port": 80, "protocol": "tcp", "result": {"open": True, "reason": "connected"}, "probe": [], "reply": []}
    assert render(report, "text").startswith(
        "trace ds: default/client -> web ([fd00:10:96::14]:80/tcp): open (connected)\n")
    ping = {**report, "port": None, "protocol": "icmp", "destination": "fd00:10:96::14"}
    assert "(fd00:10:96::14/icmp)" in render(ping, "text")
