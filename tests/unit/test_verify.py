"""verify: the expect model (good and bad entries, exact messages), targets, judging, the report."""

from __future__ import annotations

import io
import json

import pytest
from pydantic import ValidationError
from rich.console import Console

from labkit import verify
from labkit.errors import InputError
from labkit.topology.expect import Expect, Target, expect_problems, parse_expects, parse_ping_target, parse_target
from labkit.verify import CheckResult, Report

# ---------------------------------------------------------------- targets


@pytest.mark.parametrize("text, target", [
    ("web:80", Target("name", "web", 80)),
    ("web.default:80", Target("name", "web.default", 80)),
    ("db.prod:5432", Target("name", "db.prod", 5432)),
    ("web.default.svc.cluster.local:80", Target("name", "web.default.svc.cluster.local", 80)),
    ("web.default.svc.cluster.local.:80", Target("name", "web.default.svc.cluster.local.", 80)),
    ("Web.Default:80", Target("name", "web.default", 80)),
    ("cp:30080", Target("name", "cp", 30080)),
    ("default/client:8080", Target("pod", "default/client", 8080)),
    ("team-a/db-0:5432", Target("pod", "team-a/db-0", 5432)),
    ("10.96.0.10:53", Target("ip", "10.96.0.10", 53)),
    ("172.31.0.2:65535", Target("ip", "172.31.0.2", 65535)),
])
def test_good_targets(text: str, target: Target) -> None:
    assert parse_target(text) == target
    assert str(target) == f"{target.host}:{target.port}"
    assert target.family == (4 if target.kind == "ip" else None)


@pytest.mark.parametrize("text, target, written", [
    ("[fd00::1]:80", Target("ip", "fd00::1", 80), "[fd00::1]:80"),
    ("[FD00:0:0::a]:53", Target("ip", "fd00::a", 53), "[fd00::a]:53"),  # kept canonical: one column per address
    (" [fd00:10:96::a]:53 ", Target("ip", "fd00:10:96::a", 53), "[fd00:10:96::a]:53"),
    ("[::ffff:10.0.0.1]:80", Target("ip", "::ffff:a00:1", 80), "[::ffff:a00:1]:80"),
])
def test_ipv6_targets_in_brackets(text: str, target: Target, written: str) -> None:
    assert parse_target(text) == target
    assert str(target) == written and target.family == 6


@pytest.mark.parametrize("text, target", [
    ("fd00:10:244:1::5", Target("ip", "fd00:10:244:1::5", None)),
    ("[fd00:10:244:1::5]", Target("ip", "fd00:10:244:1::5", None)),
    ("10.244.1.5", Target("ip", "10.244.1.5", None)),
    ("default/web-0", Target("pod", "default/web-0", None)),
    ("cp", Target("name", "cp", None)),
    ("web.default", Target("name", "web.default", None)),
])
def test_ping_targets_have_no_port(text: str, target: Target) -> None:
    assert parse_ping_target(text) == target
    assert str(target) == target.host


PING_FORMS = "e.g. web.default, default/web-0, cp, 10.244.1.5 or fd00:10:244:1::5"


@pytest.mark.parametrize("text, message", [
    ("web:80", f"'web:80': a ping (protocol: icmp) has no port; write the host alone, {PING_FORMS}"),
    ("[fd00::1]:80", f"'[fd00::1]:80': a ping (protocol: icmp) has no port; write the host alone, {PING_FORMS}"),
    ("fd00::zz", "'fd00::zz' is not an IPv6 address or HOST:PORT: an IPv6 address with a port is written in "
                 "brackets, e.g. [fd00::1]:80"),
    ("10.0.0.300", "'10.0.0.300' in '10.0.0.300' is not an IPv4 address"),
    (5, f"expected a host to ping as a string, got 5; {PING_FORMS}"),
])
def test_bad_ping_targets(text: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_ping_target(text)  # type: ignore[arg-type]
    assert str(info.value) == message


FORMS = "e.g. web.default:80, default/web-0:8080, cp:30080, 10.96.0.10:53 or [fd00:10:96::a]:53"


@pytest.mark.parametrize("text, message", [
    ("web", f"'web' has no port; write TARGET:PORT, {FORMS}"),
    (":80", f"':80' has no host before the port; write TARGET:PORT, {FORMS}"),
    ("web:0", "port '0' in 'web:0' is not a number 1-65535"),
    ("web:65536", "port '65536' in 'web:65536' is not a number 1-65535"),
    ("web:http", "port 'http' in 'web:http' is not a number 1-65535"),
    ("web:\u0661\u0662", "port '\u0661\u0662' in 'web:\u0661\u0662' is not a number 1-65535"),  # Arabic-Indic 12
    ("10.0.0.300:80", "'10.0.0.300' in '10.0.0.300:80' is not an IPv4 address"),
    ("[::1]", f"'[::1]' has no port; write TARGET:PORT, {FORMS}"),
    ("fd00::1", f"'fd00::1' is an IPv6 address without a port: write [fd00::1]:PORT, {FORMS}"),
    ("fd00::1:80", f"'fd00::1:80' is an IPv6 address without a port: write [fd00::1:80]:PORT (or, if :80 is "
                   f"the port, [fd00::1]:80), {FORMS}"),
    ("fd00::zz:80", "'fd00::zz:80' is not an IPv6 address or HOST:PORT: an IPv6 address with a port is written "
                    "in brackets, e.g. [fd00::1]:80"),
    ("fd00::1:8080:80", "'fd00::1:8080:80' is an IPv6 address without a port: write [fd00::1:8080:80]:PORT (or, "
                        f"if :80 is the port, [fd00::1:8080]:80), {FORMS}"),
    ("10.0.0.1:80:80", "'10.0.0.1:80:80' is not an IPv6 address or HOST:PORT: an IPv6 address with a port is "
                       "written in brackets, e.g. [fd00::1]:80"),
    ("[fd00::1]80", "'[fd00::1]80': after ']' comes ':PORT', e.g. [fd00::1]:80"),
    ("[fd00::1]:", "port '' in '[fd00::1]:' is not a number 1-65535"),
    ("[fd00::1]:99999", "port '99999' in '[fd00::1]:99999' is not a number 1-65535"),
    ("[fd00::1:80", "'[fd00::1:80': '[' without its ']'; write [IPv6 address]:PORT, e.g. [fd00::1]:80"),
    ("[]:80", "'[]:80': no address in the brackets; write [IPv6 address]:PORT, e.g. [fd00::1]:80"),
    ("[10.0.0.1]:80", "'10.0.0.1' in '[10.0.0.1]:80' is not an IPv6 address (brackets hold one, e.g. "
                      "[fd00::1]:80)"),
    ("[web]:80", "'web' in '[web]:80' is not an IPv6 address (brackets hold one, e.g. [fd00::1]:80)"),
    ("web_x:80", "host 'web_x' is not a DNS name: label 'web_x' must be 1-63 of a-z, 0-9, '-', "
                 "starting and ending with a letter or digit"),
    ("web..default:80", "host 'web..default' is not a DNS name: label '' must be 1-63 of a-z, 0-9, '-', "
                        "starting and ending with a letter or digit"),
    ("a/b/c:80", "'a/b/c' is not NS/POD: a namespace and a pod name of a-z, 0-9, '-' (pod names also '.'), "
                 "e.g. default/client"),
    (80, f"expected TARGET:PORT as a string, got 80; {FORMS}"),
])
def test_bad_targets(text: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_target(text)  # type: ignore[arg-type]
    assert str(info.value) == message


# ---------------------------------------------------------------- entries


def test_good_entries_and_their_defaults() -> None:
    checks, problems = expect_problems([
        {"from": "default/client", "to": "web.default.svc.cluster.local:80", "result": "open"},
        {"from": "ext", "to": "cp:30080", "result": "closed"},
        {"from": "default/client", "to": "kube-dns.kube-system:53", "protocol": "udp", "result": "open"},
        {"from": "default/client", "resolve": "web", "result": "10.96.0.0/16"},
        {"from": "default/client", "resolve": "nope.default", "result": "nxdomain"},
        {"from": "cp", "resolve": "kube-dns.kube-system", "result": "10.96.0.10"},
    ])
    assert problems == []
    web, ext, udp, cidr, nx, ip = checks
    assert (web.source, web.to, web.proto, web.result, web.kind) == (
        "default/client", Target("name", "web.default.svc.cluster.local", 80), "tcp", "open", "connect")
    assert ext.destination == "cp:30080" and ext.describe() == "ext -> cp:30080"
    assert udp.proto == "udp" and udp.destination == "kube-dns.kube-system:53/udp"
    assert (cidr.kind, cidr.resolve, cidr.result) == ("resolve", "web", "10.96.0.0/16")
    assert nx.result == "NXDOMAIN" and nx.describe() == "default/client resolve nope.default"
    assert ip.result == "10.96.0.10" and ip.destination == "resolve kube-dns.kube-system"


def test_entries_are_frozen_and_parsed_entries_pass_through() -> None:
    check = parse_expects([{"from": "cp", "to": "10.0.0.1:22", "result": "open"}])[0]
    with pytest.raises(ValidationError):
        check.result = "closed"  # type: ignore[misc]
    assert parse_expects([check]) == [check]
    assert parse_expects(None) == [] and parse_expects([]) == []


EXAMPLE = "{from: default/client, to: web:80, result: open}"


@pytest.mark.parametrize("entry, problems", [
    ({"to": "web:80", "result": "open"},
     ["expect[0].from: missing; name the source: NS/POD (default/client) or NODE (cp)"]),
    ({"from": "default/client", "to": "web:80"},
     ["expect[0].result: missing; valid: open or closed for 'to', a CIDR, an IP or NXDOMAIN for 'resolve'"]),
    ({"from": "default/client", "result": "open"},
     [f"expect[0].to: missing: give 'to' (a connection check) or 'resolve' (a DNS check), e.g. {EXAMPLE}"]),
    ({"from": "default/client", "to": "web:80", "resolve": "web", "result": "open"},
     ["expect[0].resolve: give either 'to' (a connection check) or 'resolve' (a DNS check), not both"]),
    ({"from": "default/client", "to": "web:80", "result": "maybe"},
     ["expect[0].result: 'maybe' is not valid for a 'to' check; valid: open, closed"]),
    ({"from": "default/client", "to": "web:80", "result": True},
     ["expect[0].result: expected open, closed, a CIDR, an IP or NXDOMAIN, got True"]),
    ({"from": "default/client", "to": "web:80", "result": "open", "protocol": "sctp"},
     ["expect[0].protocol: 'sctp' is not valid; valid: tcp, udp, icmp (a ping)"]),
    ({"from": "default/client", "to": "web:80", "result": "open", "timeout": 3},
     ["expect[0].timeout: unknown key; valid keys: from, to, resolve, result, protocol, family, within, http"]),
    ({"from": "default/client", "to": "web", "result": "open"},
     [f"expect[0].to: 'web' has no port; write TARGET:PORT, {FORMS}"]),
    ({"from": "Default/Client", "to": "web:80", "result": "open"},
     ["expect[0].from: 'Default/Client' is not NS/POD: a namespace and a pod name of a-z, 0-9, '-' "
      "(pod names also '.'), e.g. default/client"]),
    ({"from": "no_such node", "to": "web:80", "result": "open"},
     ["expect[0].from: 'no_such node' is not a source: write NS/POD (default/client) or NODE (cp)"]),
    ({"from": 7, "to": "web:80", "result": "open"},
     ["expect[0].from: expected NS/POD or NODE as a string, got 7"]),
    ({"from": "default/client", "resolve": "web", "result": "open"},
     ["expect[0].result: 'open' is not valid for a 'resolve' check; valid: a CIDR (10.96.0.0/16), "
      "an IP (10.96.0.10) or NXDOMAIN"]),
    ({"from": "default/client", "resolve": "web", "result": "10.96.0.1/16"},
     ["expect[0].result: '10.96.0.1/16' has host bits set; did you mean 10.96.0.0/16?"]),
    ({"from": "default/client", "resolve": "web", "result": "10.96.0.0/16", "protocol": "udp"},
     ["expect[0].protocol: only a 'to' check has a protocol; 'resolve' asks the cluster DNS"]),
    ({"from": "default/client", "resolve": "bad_name", "result": "NXDOMAIN"},
     ["expect[0].resolve: name 'bad_name' is not a DNS name: label 'bad_name' must be 1-63 of a-z, 0-9, '-', "
      "starting and ending with a letter or digit"]),
    ({"from": "default/client", "resolve": 5, "result": "NXDOMAIN"},
     ["expect[0].resolve: expected a DNS name as a string, got 5"]),
    ("default/client -> web:80",
     [f"expect[0]: expected a mapping such as {EXAMPLE}, got a string ('default/client -> web:80')"]),
    ({"from": "a/b/c", "to": "web", "result": "open", "via": 1},
     ["expect[0].from: 'a/b/c' is not NS/POD: a namespace and a pod name of a-z, 0-9, '-' (pod names also '.'), "
      "e.g. default/client",
      f"expect[0].to: 'web' has no port; write TARGET:PORT, {FORMS}",
      "expect[0].via: unknown key; valid keys: from, to, resolve, result, protocol, family, within, http"]),
])
def test_bad_entries_name_the_entry_and_field(entry: object, problems: list[str]) -> None:
    checks, found = expect_problems([entry])
    assert checks == []
    assert [str(p) for p in found] == problems


def test_every_entry_is_checked_and_indexes_are_kept() -> None:
    checks, problems = expect_problems([
        {"from": "cp", "to": "10.0.0.1:22", "result": "open"},
        {"from": "cp", "to": "10.0.0.1:22", "result": "half-open"},
        {"from": "cp", "to": "10.0.0.1:22", "result": "closed"},
        ["not", "a", "mapping"],
    ])
    assert len(checks) == 2
    assert [(p.index, p.field, p.path) for p in problems] == [
        (1, "result", ("expect", 1, "result")), (3, "", ("expect", 3))]
    assert str(problems[1]) == f"expect[3]: expected a mapping such as {EXAMPLE}, got a list"


def test_expect_must_be_a_list() -> None:
    _, problems = expect_problems({"from": "cp"})
    assert [(str(p), p.path) for p in problems] == [
        (f"expect: expected a list of checks such as [{EXAMPLE}], got a mapping", ("expect",))]


def test_parse_expects_reports_file_and_line() -> None:
    lines = {("expect", 1, "result"): 12, ("expect", 2): 14}
    with pytest.raises(InputError) as info:
        parse_expects([{"from": "cp", "to": "10.0.0.1:22", "result": "open"},
                       {"from": "cp", "to": "10.0.0.1:22", "result": "up"},
                       "x"],
                      file="lab.yaml", line_of=lambda path: lines.get(path))
    assert str(info.value).splitlines() == [
        "lab.yaml:12: expect[1].result: 'up' is not valid for a 'to' check; valid: open, closed",
        f"lab.yaml:14: expect[2]: expected a mapping such as {EXAMPLE}, got a string ('x')",
    ]
    assert info.value.exit_code == 2


def test_load_expects_from_a_topology_file(tmp_path) -> None:
    topo = tmp_path / "lab.yaml"
    topo.write_text(
        "name: t\n"
        "topology:\n"
        "  nodes: {a: {kind: linux}}\n"
        "expect:\n"
        "  - {from: a, to: 10.0.0.1:22, result: open}\n"
        "  - from: a\n"
        "    to: 10.0.0.1:22\n"
        "    protocol: sctp\n"
        "    result: open\n"
        "  - from: a\n"
        "    to: '[fd00::1]:22'\n"
        "    protocol: icmp\n"
        "    result: open\n"
    )
    with pytest.raises(InputError) as info:
        verify.load_expects(str(topo))
    assert str(info.value) == (
        f"{topo}:8: expect[1].protocol: 'sctp' is not valid; valid: tcp, udp, icmp (a ping)\n"
        f"{topo}:11: expect[2].to: '[fd00::1]:22': a ping (protocol: icmp) has no port; write the host alone, "
        "e.g. web.default, default/web-0, cp, 10.244.1.5 or fd00:10:244:1::5")
    topo.write_text("name: t\ntopology:\n  nodes: {a: {kind: linux}}\n"
                    "expect:\n  - {from: a, resolve: x, result: NXDOMAIN}\n")
    assert [c.resolve for c in verify.load_expects(str(topo))] == ["x"]


# ---------------------------------------------------------------- judging agent answers


def _check(**entry) -> Expect:
    return parse_expects([entry])[0]


@pytest.mark.parametrize("result, raw, actual, ok", [
    ("open", {"open": True, "reason": "connected (web-1)"}, "open", True),
    ("open", {"open": False, "reason": "connection refused"}, "closed", False),
    ("closed", {"open": False, "reason": "timed out after 1s"}, "closed", True),
    ("closed", {"open": False, "status": "ERROR", "reason": "agent failed"}, "error", False),
])
def test_judge_connections(result: str, raw: dict, actual: str, ok: bool) -> None:
    r = verify._judge(0, _check(**{"from": "default/client", "to": "web:80", "result": result}), raw)
    assert (r.actual, r.ok, r.reason) == (actual, ok, raw["reason"])


@pytest.mark.parametrize("want, raw, actual, ok", [
    ("10.96.0.0/16", {"status": "NOERROR", "addresses": ["10.96.1.2"]}, "10.96.1.2", True),
    ("10.96.0.0/16", {"status": "NOERROR", "addresses": ["10.96.1.2", "10.244.0.5"]}, "10.96.1.2, 10.244.0.5",
     False),
    ("10.96.0.10", {"status": "NOERROR", "addresses": ["10.96.0.10"]}, "10.96.0.10", True),
    ("10.96.0.10", {"status": "NOERROR", "addresses": ["10.96.0.11"]}, "10.96.0.11", False),
    ("NXDOMAIN", {"status": "NXDOMAIN", "addresses": []}, "NXDOMAIN", True),
    ("NXDOMAIN", {"status": "NODATA", "addresses": []}, "NODATA", False),
    ("NXDOMAIN", {"status": "NOERROR", "addresses": ["10.96.0.3"]}, "10.96.0.3", False),
    ("10.96.0.0/16", {"status": "NXDOMAIN", "addresses": []}, "NXDOMAIN", False),
    ("10.96.0.0/16", {"status": "TIMEOUT", "addresses": []}, "error", False),
])
def test_judge_resolutions(want: str, raw: dict, actual: str, ok: bool) -> None:
    r = verify._judge(3, _check(**{"from": "default/client", "resolve": "web", "result": want}), raw)
    assert (r.index, r.actual, r.ok) == (3, actual, ok)


def test_unknown_names_fail_their_check_without_running_anything() -> None:
    status = {"name": "lab1", "pods": [{"namespace": "default", "name": "client", "ip": "10.244.0.2",
                                        "netns_path": "/nonexistent/netns"}],
              "nodes": [{"name": "cp", "mgmt_ipv4": "172.31.0.2", "netns": "lk-lab1.cp", "netns_path": None},
                        {"name": "ext", "mgmt_ipv4": None, "netns": "lk-lab1.ext"}],
              "dns": None}
    report = verify.run_checks(status, [
        {"from": "default/nobody", "to": "10.0.0.1:80", "result": "open"},
        {"from": "router", "to": "10.0.0.1:80", "result": "closed"},
        {"from": "cp", "to": "default/ghost:80", "result": "open"},
        {"from": "cp", "to": "ext:80", "result": "open"},
        {"from": "cp", "to": "web:80", "result": "open"},
        {"from": "cp", "resolve": "web", "result": "NXDOMAIN"},
    ])
    assert [r.actual for r in report.results] == ["error"] * 6
    assert [r.reason for r in report.results] == [
        "lab 'lab1' has no pod 'default/nobody' (pods: default/client)",
        "lab 'lab1' has no node or pod 'router' (nodes: cp, ext; pods are NS/POD)",
        "lab 'lab1' has no pod 'default/ghost' (pods: default/client)",
        "node 'ext' has no mgmt address to connect to",
        "cannot resolve 'web': lab 'lab1' has no cluster DNS",
        "lab 'lab1' has no cluster DNS to ask",
    ]
    assert report.exit_code == 1


def test_lab_view_sources_and_dns_config() -> None:
    view = verify.LabView({"name": "l", "dns": {"ip": "10.96.0.10"},
                           "pods": [{"namespace": "team-a", "name": "p", "ip": "10.244.2.2",
                                     "netns_path": "/proc/123/ns/net"}],
                           "nodes": [{"name": "cp", "netns": "lk-l.cp", "mgmt_ipv4": "172.31.0.2"}]},
                          domain="example.test")
    pod, node = view.source("team-a/p"), view.source("cp")
    assert (pod.netns_path, pod.namespace, node.netns_path, node.namespace) == (
        "/proc/123/ns/net", "team-a", "/run/netns/lk-l.cp", "default")
    assert view.dns_config(pod) == {"nameserver": "10.96.0.10", "ndots": 5, "search": [
        "team-a.svc.example.test", "svc.example.test", "example.test"]}
    assert view.target_host(Target("name", "cp", 30080)) == "172.31.0.2"
    assert view.target_host(Target("name", "web.default", 80)) == "web.default"
    assert view.target_host(Target("pod", "team-a/p", 80)) == "10.244.2.2"
    assert view.target_host(Target("ip", "1.2.3.4", 80)) == "1.2.3.4"


def test_agent_command_enters_only_the_network_namespace() -> None:
    argv = verify.agent_argv("/run/netns/lk-x.cp", "probe-many")
    assert argv[:3] == ["nsenter", "--net=/run/netns/lk-x.cp", "--"]
    assert argv[4:6] == ["-IS", "-c"] and "from labkit.agent import main" in argv[6]
    assert argv[7:] == ["probe-many"]


# ---------------------------------------------------------------- the report


def _report() -> Report:
    checks = parse_expects([
        {"from": "default/client", "to": "web:80", "result": "open"},
        {"from": "default/client", "to": "nobody.default:80", "result": "closed"},
        {"from": "default/client", "to": "10.96.0.10:53", "protocol": "udp", "result": "open"},
        {"from": "team-a/probe", "to": "web:80", "result": "open"},
        {"from": "ext", "to": "cp:30080", "result": "open"},
        {"from": "default/client", "resolve": "web", "result": "10.96.0.0/16"},
        {"from": "default/client", "resolve": "nope.default", "result": "NXDOMAIN"},
    ])
    raws = [
        {"open": True, "reason": "connected (web-a)", "resolved": {"addresses": ["10.96.5.5"]},
         "address": "10.96.5.5"},
        {"open": False, "reason": "connection refused"},
        {"open": True, "reason": "reply (26 bytes)"},
        {"open": False, "reason": "name not resolved: NXDOMAIN (tried web.team-a.svc.cluster.local.)"},
        {"open": True, "reason": "connected (web-b)"},
        {"status": "NOERROR", "addresses": ["10.96.5.5"], "reason": "ok"},
        {"status": "NOERROR", "addresses": ["10.96.7.7"], "reason": "nope.default.svc.cluster.local. -> 10.96.7.7"},
    ]
    return Report("kube3", [verify._judge(i, c, r) for i, (c, r) in enumerate(zip(checks, raws, strict=True))],
                  elapsed=0.5)


def test_matrix_rows_are_sources_columns_destinations() -> None:
    assert _report().matrix().splitlines() == [
        "from \\ to       web:80  nobody.default:80  10.96.0.10:53/udp  cp:30080",
        "default/client    .             X                  .",
        "team-a/probe      X!",
        "ext                                                              .",
    ]


def test_mismatches_are_listed_with_what_differed() -> None:
    report = _report()
    assert not report.ok and report.exit_code == 1
    assert [r.line() for r in report.mismatches] == [
        "team-a/probe -> web:80 expected open, got closed "
        "(name not resolved: NXDOMAIN (tried web.team-a.svc.cluster.local.))",
        "default/client resolve nope.default expected NXDOMAIN, got 10.96.7.7 "
        "(nope.default.svc.cluster.local. -> 10.96.7.7)",
    ]
    first = report.results[0]
    assert (first.addresses, first.address) == (("10.96.5.5",), "10.96.5.5")


def test_plain_report_and_exit_code() -> None:
    out = io.StringIO()
    assert verify.print_report(_report(), file=out) == 1
    text = out.getvalue()
    assert text.startswith("from \\ to")
    assert "legend: . open   X closed   ! not as expected" in text
    assert "ok default/client resolve web: 10.96.5.5 (expected 10.96.0.0/16)" in text
    assert "!! default/client resolve nope.default: 10.96.7.7 (expected NXDOMAIN)" in text
    assert "lab kube3: 5/7 checks as expected in 0.50s" in text
    assert text.rstrip().endswith("got 10.96.7.7 (nope.default.svc.cluster.local. -> 10.96.7.7)")


def test_all_as_expected_exits_zero() -> None:
    report = _report()
    report.results = [r for r in report.results if r.ok]
    out = io.StringIO()
    assert verify.print_report(report, file=out) == 0
    assert "not as expected:" not in out.getvalue()
    assert Report("empty").exit_code == 0 and Report("empty").matrix() == ""


def test_rich_report_on_a_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200, color_system="standard")
    assert verify.print_report(_report(), console=console) == 1
    text = out.getvalue()
    assert "\x1b[" in text                       # coloured
    assert "X!" in text and "team-a/probe" in text and "cp:30080" in text
    assert "team-a/probe -> web:80 expected open, got closed" in text


def test_report_as_json() -> None:
    data = json.loads(_report().as_json())
    assert data["lab"] == "kube3" and data["ok"] is False and data["elapsed"] == 0.5
    assert data["matrix"] == {
        "rows": ["default/client", "team-a/probe", "ext"],
        "columns": ["web:80", "nobody.default:80", "10.96.0.10:53/udp", "cp:30080"],
        "cells": [[".", "X", ".", ""], ["X!", "", "", ""], ["", "", "", "."]],
    }
    assert data["checks"][2] == {
        "index": 2, "from": "default/client", "kind": "connect", "to": "10.96.0.10:53", "protocol": "udp",
        "resolve": None, "family": None, "expected": "open", "actual": "open", "ok": True,
        "reason": "reply (26 bytes)",
        "addresses": [], "address": None, "within": 0.0, "attempts": 1, "elapsed": 0.0}
    assert data["checks"][6]["kind"] == "resolve" and data["checks"][6]["protocol"] is None
    assert len(data["mismatches"]) == 2


def test_check_result_is_a_plain_value() -> None:
    check = _check(**{"from": "cp", "to": "10.0.0.1:22", "result": "open"})
    r = CheckResult(0, check, "open", True, "connected")
    assert r.expected == "open" and r.line() == "cp -> 10.0.0.1:22 expected open, got open (connected)"


def test_serve_ports_rejects_bad_port_specs() -> None:
    status = {"name": "l", "pods": [], "nodes": [{"name": "cp", "netns": "lk-l.cp"}]}
    with pytest.raises(verify.LabkitError) as info:
        verify.serve_ports(status, {"cp": ["80/sctp"]})
    assert str(info.value) == "serve_ports: cp: '80/sctp' is not PORT, PORT/tcp or PORT/udp"
    with pytest.raises(verify.LabkitError, match="has no node or pod 'r9'"):
        verify.serve_ports(status, {"r9": [80]})


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_print_verify_prints_and_returns_the_exit_code(fmt: str) -> None:
    out = io.StringIO()
    assert verify.print_verify(_report(), output_format=fmt, file=out) == 1
    if fmt == "json":
        assert json.loads(out.getvalue())["ok"] is False
    else:
        assert "not as expected:" in out.getvalue()
    with pytest.raises(verify.LabkitError, match="unknown format 'yaml'; valid: table, json"):
        verify.print_verify(_report(), output_format="yaml")
