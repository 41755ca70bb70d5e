"""Pure parts of impairment, capture and events: values and units, the tc/nft they become, filters, and
how netlink notifications read (no root, no kernel)."""

from __future__ import annotations

import socket
import struct

import pytest

from labkit import capture, events, impair
from labkit.cli import _parser, run
from labkit.errors import InputError
from labkit.net import netlink as nl
from labkit.templating import render
from labkit.topology.impairment import Impairment, format_rate, parse_percent, parse_rate, parse_time


@pytest.mark.parametrize(("value", "ms"), [(50, 50.0), ("50ms", 50.0), ("1.5s", 1500.0), ("500us", 0.5),
                                           (0, 0.0), ("60s", 60000.0)])
def test_times_in_netlab_units_or_with_a_unit(value, ms) -> None:
    assert parse_time(value) == ms


@pytest.mark.parametrize(("value", "percent"), [(1, 1.0), ("0.5%", 0.5), ("100%", 100.0), (12.345, 12.35)])
def test_percentages(value, percent) -> None:
    assert parse_percent(value) == percent


@pytest.mark.parametrize(("value", "kbit"), [(512, 512), ("512kbit", 512), ("10mbit", 10_000), ("1gbit", 1_000_000),
                                             ("10Mbit", 10_000)])
def test_rates_in_kbit(value, kbit) -> None:
    assert parse_rate(value) == kbit


@pytest.mark.parametrize(("parse", "value", "words"), [
    (parse_time, "50sec", "not a time"), (parse_time, "61s", "out of range"), (parse_time, -1, "out of range"),
    (parse_percent, "101%", "out of range"), (parse_percent, "1 percent", "not a percentage"),
    (parse_rate, "10kbps", "kilobytes/s"), (parse_rate, 2, "out of range"), (parse_rate, "200gbit", "out of range"),
    (parse_time, True, "should be a number"), (parse_rate, float("nan"), "finite"), (parse_time, "9" * 40, "too long"),
])
def test_bad_values_say_what_is_valid(parse, value, words) -> None:
    with pytest.raises(ValueError, match=words):
        parse(value)


def test_impairment_values_merge_describe_and_need_netem() -> None:
    link = Impairment.from_values({"rate": "10mbit", "loss": "1%"})
    end = Impairment.from_values({"loss": 0, "delay": "20ms", "jitter": 2})
    merged = link.merged(end)
    assert merged == Impairment(delay=20.0, jitter=2.0, loss=1.0, rate=10_000)  # loss 0 means "not given"
    assert merged.describe() == "delay 20ms jitter 2ms loss 1% rate 10mbit"
    assert merged.netem_needs() == ["delay", "jitter"] and link.netem_needs() == []
    assert Impairment(jitter=5).problems() and not merged.problems()
    assert Impairment().is_empty() and Impairment().describe() == "none"
    assert format_rate(1500) == "1500kbit" and format_rate(2_000_000) == "2gbit"


def test_rate_is_tbf_and_the_rest_netem() -> None:
    assert impair.tbf_args(10_000) == ["tbf", "rate", "10000kbit", "burst", "16384", "latency", "50ms"]
    assert impair.tbf_args(1_000_000)[4] == "1250000"  # 10 ms of a gigabit
    assert impair.netem_args(Impairment(delay=50, jitter=5, corrupt=0.1, rate=1000)) == \
        ["netem", "delay", "50ms", "5ms", "corrupt", "0.1%", "rate", "1000kbit"]


def test_loss_rules_drop_where_packets_arrive() -> None:
    text = render("impair.nft.j2", trim=True, table=impair.TABLE, chains=[
        {"name": "loss-eth1", "ifname": "eth1", "percent": "12.5", "basis_points": 1250, "origin": "w1:eth1"},
        {"name": "loss-eth2", "ifname": "eth2", "percent": "100", "basis_points": 10000, "origin": "w1:eth2"}])
    assert 'hook ingress device "eth1"' in text
    assert 'numgen random mod 10000 < 1250 counter drop comment "labkit loss 12.5% of w1:eth1"' in text
    assert '    counter drop comment "labkit loss 100% of w1:eth2"' in text  # all: no numgen
    assert text.index("delete table netdev labkit-impair") < text.rindex("table netdev labkit-impair {")
    empty = render("impair.nft.j2", trim=True, table=impair.TABLE, chains=[])
    assert empty.strip().endswith("delete table netdev labkit-impair")


def test_qdiscs_read_back() -> None:
    assert impair._from_qdisc({"kind": "tbf", "options": {"rate": 1_250_000}}) == ({"rate": 10_000}, "tbf")
    netem = {"kind": "netem", "options": {"delay": {"delay": 0.05, "jitter": 0.005}, "corrupt": {"corrupt": 0.001},
                                          "rate": {"rate": 125_000}}}
    assert impair._from_qdisc(netem) == ({"delay": 50.0, "jitter": 5.0, "corrupt": 0.1, "rate": 1000}, "netem")
    assert impair._from_qdisc({"kind": "noqueue", "options": {}}) == ({}, None)


def test_capture_filter_and_interface_checks() -> None:
    assert capture.check_filter(["udp", "port", "53"]) == "udp port 53"
    with pytest.raises(InputError, match="NUL"):
        capture.check_filter(["port\x0053"])
    with pytest.raises(InputError, match="at most"):
        capture.check_filter(["x" * 5000])
    assert capture.check_interface(None) == "any" and capture.check_interface("eth0") == "eth0"
    with pytest.raises(InputError, match="not an interface name"):
        capture.check_interface("-i")


def test_capture_filter_words_never_reach_option_parsing(monkeypatch) -> None:
    """Everything after `--` is the filter, even words that look like options."""
    seen = {}

    def fake_capture(lab, target, output, words):
        seen.update(lab=lab, target=target, output=output, words=words)
        return 0

    import labkit.lab

    monkeypatch.setattr(labkit.lab, "capture", fake_capture)
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert run(["capture", "kube3", "w1:eth0", "-w", "/tmp/x.pcap", "--", "-w", "port", "53"]) == 0
    assert seen == {"lab": "kube3", "target": "w1:eth0", "output": "/tmp/x.pcap", "words": ["-w", "port", "53"]}
    assert _parser().parse_args(["capture", "kube3", "default/client"]).filter == []


def _link_payload(index: int, name: str, flags: int) -> bytes:
    return struct.pack("=BxHiII", 0, 1, index, flags, 0) + nl.attr_str(nl.IFLA_IFNAME, name)


def test_link_notifications_become_up_down_events() -> None:
    watched = object.__new__(events._Watched)
    watched.name, watched.links = "w1", {2: ("eth0", "up")}
    down = list(watched._decode("kube3", 1.0, nl.RTM_NEWLINK, _link_payload(2, "eth0", nl.IFF_LOWER_UP)))
    assert [(e.where, e.kind, e.action, e.detail["interface"]) for e in down] == [("w1", "link", "down", "eth0")]
    assert list(watched._decode("kube3", 1.0, nl.RTM_NEWLINK, _link_payload(2, "eth0", 0))) == []  # no change
    up = next(watched._decode("kube3", 2.0, nl.RTM_NEWLINK, _link_payload(2, "eth0", nl.IFF_UP | nl.IFF_LOWER_UP)))
    assert up.action == "up" and "eth0 up" in up.text()
    added = next(watched._decode("kube3", 2.0, nl.RTM_NEWLINK, _link_payload(7, "veth1", nl.IFF_UP)))
    assert (added.action, added.detail["state"]) == ("added", "no-carrier")
    route = struct.pack("=BBBBBBBBI", 2, 32, 0, 0, 254, 4, 253, 1, 0) + nl.attr(nl.RTA_DST, bytes([10, 244, 1, 5])) \
        + nl.attr_u32(nl.RTA_OIF, 7)
    event = next(watched._decode("kube3", 3.0, nl.RTM_NEWROUTE, route))
    assert event.as_dict()["dst"] == "10.244.1.5/32" and event.detail["interface"] == "veth1"
    assert "route added 10.244.1.5/32 dev veth1" in event.text()


def _addr_payload(family: int, address: bytes, prefixlen: int, index: int) -> bytes:
    return struct.pack("=BBBBI", family, prefixlen, 0, 0, index) + nl.attr(nl.IFA_LOCAL, address) \
        + nl.attr(nl.IFA_ADDRESS, address)


def _route_payload(family: int, dst: bytes, prefixlen: int, oif: int, table: int = 254) -> bytes:
    return struct.pack("=BBBBBBBBI", family, prefixlen, 0, 0, table, 4, 0, 1, 0) + nl.attr(nl.RTA_DST, dst) \
        + nl.attr_u32(nl.RTA_OIF, oif)


def test_ipv6_addresses_and_routes_are_events_and_link_local_ones_not() -> None:
    watched = object.__new__(events._Watched)
    watched.name, watched.links = "w1", {7: ("veth1", "up")}
    ula = socket.inet_pton(socket.AF_INET6, "fd00:10:244:1::5")
    added = list(watched._decode("kube3", 1.0, nl.RTM_NEWADDR, _addr_payload(socket.AF_INET6, ula, 64, 7)))
    assert [(e.kind, e.action, e.detail) for e in added] == [
        ("address", "added", {"address": "fd00:10:244:1::5/64", "interface": "veth1"})]
    net = socket.inet_pton(socket.AF_INET6, "fd00:10:244:2::")
    route = next(watched._decode("kube3", 1.0, nl.RTM_NEWROUTE, _route_payload(socket.AF_INET6, net, 64, 7)))
    assert route.as_dict()["dst"] == "fd00:10:244:2::/64" and "route added fd00:10:244:2::/64 dev veth1" in route.text()
    link_local = socket.inet_pton(socket.AF_INET6, "fe80::1")
    assert list(watched._decode("kube3", 1.0, nl.RTM_NEWADDR, _addr_payload(socket.AF_INET6, link_local, 64, 7))) == []
    fe80 = socket.inet_pton(socket.AF_INET6, "fe80::")
    assert list(watched._decode("kube3", 1.0, nl.RTM_NEWROUTE, _route_payload(socket.AF_INET6, fe80, 64, 7))) == []
    assert events.GROUPS & nl.RTMGRP_IPV6_IFADDR and events.GROUPS & nl.RTMGRP_IPV6_ROUTE
