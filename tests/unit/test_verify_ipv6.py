"""verify over IPv6 and dual-stack: `family:` on expect entries, pings, and what the agent is asked."""

from __future__ import annotations

import pytest

from labkit import verify
from labkit.errors import LabkitError
from labkit.topology.expect import Target, expect_problems, parse_expects

# ---------------------------------------------------------------- the expect model


def test_family_and_ping_entries() -> None:
    checks, problems = expect_problems([
        {"from": "default/client", "to": "[fd00:10:96::a]:53", "protocol": "udp", "result": "open"},
        {"from": "default/client", "to": "web:80", "family": 6, "result": "open"},
        {"from": "default/client", "to": "fd00:10:244:1::5", "protocol": "icmp", "result": "open"},
        {"from": "cp", "to": "default/web-0", "protocol": "icmp", "family": 4, "result": "closed"},
        {"from": "default/client", "resolve": "web", "result": "fd00:10:96::/112"},
        {"from": "default/client", "resolve": "web", "family": 6, "result": "NXDOMAIN"},
        {"from": "default/client", "to": "[fd00::1]:80", "family": 6, "result": "open"},
    ])
    assert problems == []
    udp, by_name, ping, ping4, aaaa, nx6, literal = checks
    assert udp.to == Target("ip", "fd00:10:96::a", 53) and udp.destination == "[fd00:10:96::a]:53/udp"
    assert by_name.family == 6 and by_name.destination == "web:80 (IPv6)"
    assert by_name.describe() == "default/client -> web:80 (IPv6)"
    assert ping.to == Target("ip", "fd00:10:244:1::5", None) and ping.destination == "ping fd00:10:244:1::5"
    assert ping4.destination == "ping default/web-0 (IPv4)" and ping4.kind == "connect"
    assert (aaaa.resolve_family, aaaa.result) == (6, "fd00:10:96::/112")
    assert nx6.resolve_family == 6 and nx6.describe() == "default/client resolve web (IPv6)"
    assert literal.to is not None and literal.to.family == 6


def test_an_ipv4_only_entry_is_as_it_always_was() -> None:
    check = parse_expects([{"from": "default/client", "resolve": "web", "result": "10.96.0.0/16"}])[0]
    assert (check.family, check.resolve_family, check.destination) == (None, 4, "resolve web")
    nx = parse_expects([{"from": "default/client", "resolve": "nope", "result": "NXDOMAIN"}])[0]
    assert nx.resolve_family is None  # the lab's preferred family: A records in an IPv4 lab


@pytest.mark.parametrize("entry, problems", [
    ({"from": "a", "to": "web:80", "family": "6", "result": "open"},
     ["expect[0].family: expected 4 or 6 (the address family the check goes over: IPv4 or IPv6), "
      "got a string ('6')"]),
    ({"from": "a", "to": "web:80", "family": 5, "result": "open"},
     ["expect[0].family: expected 4 or 6 (the address family the check goes over: IPv4 or IPv6), got a number (5)"]),
    ({"from": "a", "to": "web:80", "family": True, "result": "open"},
     ["expect[0].family: expected 4 or 6 (the address family the check goes over: IPv4 or IPv6), "
      "got true (a boolean)"]),
    ({"from": "a", "to": "10.0.0.1:80", "family": 6, "result": "open"},
     ["expect[0].family: 6 does not fit 10.0.0.1, an IPv4 address; give family 4, or leave it out"]),
    ({"from": "a", "to": "[fd00::1]:80", "family": 4, "result": "open"},
     ["expect[0].family: 4 does not fit fd00::1, an IPv6 address; give family 6, or leave it out"]),
    ({"from": "a", "resolve": "web", "family": 4, "result": "fd00:10:96::/112"},
     ["expect[0].family: 4 does not fit the result fd00:10:96::/112, an IPv6 network: a family 4 answer is "
      "never in it"]),
    ({"from": "a", "resolve": "web", "family": 6, "result": "10.96.0.10"},
     ["expect[0].family: 6 does not fit the result 10.96.0.10, an IPv4 address: a family 6 answer is never in it"]),
    ({"from": "a", "resolve": "web", "result": "fd00:10:96::1/112"},
     ["expect[0].result: 'fd00:10:96::1/112' has host bits set; did you mean fd00:10:96::/112?"]),
    ({"from": "a", "resolve": "web", "protocol": "icmp", "result": "open"},
     ["expect[0].protocol: icmp is a ping: it needs 'to' (a host, no port), e.g. {from: default/client, "
      "to: fd00:10:244:1::5, protocol: icmp, result: open}"]),
    ({"from": "a", "to": "web", "protocol": "icmp", "http": {"path": "/"}, "result": "200"},
     ["expect[0].http: an http check needs 'to' (a TCP port): {from: ext, to: w1:32080, http: "
      "{host: shop.example.test}, result: 200}"]),
    ({"from": "a", "to": "fd00::1", "result": "open"},
     ["expect[0].to: 'fd00::1' is an IPv6 address without a port: write [fd00::1]:PORT, e.g. web.default:80, "
      "default/web-0:8080, cp:30080, 10.96.0.10:53 or [fd00:10:96::a]:53"]),
    ({"from": "a", "to": "web:80", "protocol": "icmp", "result": "open"},
     ["expect[0].to: 'web:80': a ping (protocol: icmp) has no port; write the host alone, e.g. web.default, "
      "default/web-0, cp, 10.244.1.5 or fd00:10:244:1::5"]),
    ({"from": "a", "to": "fd00::1", "protocol": "icmp", "result": "200"},
     ["expect[0].result: '200' is not valid for a 'to' check; valid: open, closed"]),
])
def test_bad_family_and_ping_entries(entry: dict, problems: list[str]) -> None:
    checks, found = expect_problems([entry])
    assert checks == [] and [str(p) for p in found] == problems


# ---------------------------------------------------------------- what the agent is asked

DUAL = {
    "name": "ds", "cluster": {"ip_families": ["IPv4", "IPv6"], "pod_cidrs": ["10.244.0.0/16", "fd00:10:244::/56"],
                              "service_cidrs": ["10.96.0.0/16", "fd00:10:96::/112"]},
    "dns": {"ip": "10.96.0.10", "ips": ["10.96.0.10", "fd00:10:96::a"], "domain": "cluster.local"},
    "nodes": [{"name": "cp", "mgmt_ipv4": "172.31.0.2", "mgmt_ipv6": "fd00:172:31::2", "netns_path": "/n/cp",
               "hosts": {"gw": "fd00:172:31::1"}},
              {"name": "v6only", "mgmt_ipv4": None, "mgmt_ipv6": "fd00:172:31::9", "netns_path": "/n/v6"}],
    "pods": [{"namespace": "default", "name": "client", "ip": "10.244.0.2", "ips": ["10.244.0.2", "fd00:10:244::2"],
              "netns_path": "/p/client"},
             {"namespace": "default", "name": "old", "ip": "10.244.0.3", "netns_path": "/p/old"}],
}


def _requests(status: dict, *entries: dict) -> list[dict]:
    view = verify.LabView(status)
    results: dict = {}
    per_source, _ = verify._plan_requests(view, parse_expects(list(entries)), range(len(entries)), 1.0, results)
    assert results == {}, {i: r.reason for i, r in results.items()}
    return sorted((r for reqs in per_source.values() for r in reqs), key=lambda r: r["id"])


def test_lab_families_from_the_status() -> None:
    assert verify.lab_families(DUAL) == (4, 6)
    assert verify.lab_families({"dns": {"ip": "fd00:10:96::a"}}) == (6,)
    assert verify.lab_families({"cluster": {"ip_families": ["IPv6", "IPv4"]}}) == (6, 4)
    assert verify.lab_families({"dns": {"ip": "10.96.0.10"}}) == verify.lab_families({}) == (4,)


def test_a_family_picks_the_pods_and_nodes_address() -> None:
    reqs = _requests(
        DUAL,
        {"from": "cp", "to": "default/client:80", "family": 6, "result": "open"},
        {"from": "cp", "to": "default/client:80", "result": "open"},
        {"from": "default/client", "to": "cp:22", "family": 6, "result": "open"},
        {"from": "default/client", "to": "cp:22", "result": "open"},
        {"from": "default/client", "to": "v6only:22", "result": "open"},
        {"from": "cp", "to": "gw:53", "protocol": "udp", "family": 6, "result": "open"},
    )
    assert [r["host"] for r in reqs] == ["fd00:10:244::2", "10.244.0.2", "fd00:172:31::2", "172.31.0.2",
                                         "fd00:172:31::9", "fd00:172:31::1"]


def test_names_are_looked_up_for_the_lab_families_or_the_one_asked() -> None:
    by_name, v6, ping, res_any, res6, res4 = _requests(
        DUAL,
        {"from": "default/client", "to": "web:80", "result": "open"},
        {"from": "default/client", "to": "web:80", "family": 6, "result": "open"},
        {"from": "default/client", "to": "web", "protocol": "icmp", "result": "open"},
        {"from": "default/client", "resolve": "nope", "result": "NXDOMAIN"},
        {"from": "default/client", "resolve": "web", "result": "fd00:10:96::/112"},
        {"from": "default/client", "resolve": "web", "result": "10.96.0.0/16"},
    )
    assert by_name["families"] == [4, 6] and v6["families"] == [6]
    assert (ping["op"], ping["port"], ping["families"]) == ("ping", None, [4, 6])
    assert "families" not in res_any and res6["families"] == [6] and "families" not in res4  # [4]: the default
    assert by_name["dns"]["nameserver"] == "10.96.0.10"


def test_an_ipv4_lab_asks_as_it_always_did() -> None:
    v4 = {"name": "v4", "dns": {"ip": "10.96.0.10"}, "nodes": [],
          "pods": [{"namespace": "default", "name": "client", "ip": "10.244.0.2", "netns_path": "/p/c"}]}
    req, res = _requests(v4, {"from": "default/client", "to": "web:80", "result": "open"},
                         {"from": "default/client", "resolve": "web", "result": "10.96.0.0/16"})
    assert req == {"id": 0, "op": "connect", "protocol": "tcp", "host": "web", "port": 80, "timeout": 1.0,
                   "dns": {"nameserver": "10.96.0.10", "search": ["default.svc.cluster.local", "svc.cluster.local",
                                                                  "cluster.local"], "ndots": 5}}
    assert "families" not in res


def test_an_address_of_a_family_the_target_lacks_is_an_error() -> None:
    view = verify.LabView(DUAL)
    with pytest.raises(LabkitError, match=r"pod 'default/old' has no IPv6 address \(it has 10.244.0.3\)"):
        view.target_host(Target("pod", "default/old", 80), 6)
    with pytest.raises(LabkitError, match="node 'v6only' has no IPv4 mgmt address to connect to"):
        view.target_host(Target("name", "v6only", 22), 4)
    report = verify.run_checks(DUAL, [{"from": "cp", "to": "default/old:80", "family": 6, "result": "closed"}])
    assert [(r.actual, r.reason) for r in report.results] == [
        ("error", "pod 'default/old' has no IPv6 address (it has 10.244.0.3)")]
