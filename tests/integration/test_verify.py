"""labkit verify on the shipped cluster labs: connections, DNS, NodePorts, mismatches.

Every probe runs through labkit.agent in the source's own network namespace, from the
host's Python: nothing is needed in any image, under either runtime.
"""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from labkit import lab, verify
from labkit.pytest_plugin import RunningLab

CHECKS = [
    {"from": "default/client", "to": "web.default.svc.cluster.local:80", "result": "open"},
    {"from": "default/client", "to": "web:80", "result": "open"},
    {"from": "default/client", "to": "nobody.default:80", "result": "closed"},
    {"from": "ext", "to": "cp:30080", "result": "open"},
    {"from": "default/client", "resolve": "web", "result": "10.96.0.0/16"},
    {"from": "default/client", "resolve": "nope.default", "result": "NXDOMAIN"},
    {"from": "default/client", "to": "kube-dns.kube-system:53", "protocol": "udp", "result": "open"},
    {"from": "team-a/probe", "to": "web.default:80", "result": "open"},
    {"from": "team-a/probe", "to": "web:80", "result": "closed"},        # not in team-a's search list
    {"from": "team-a/probe", "to": "db-0.db:5432", "result": "open"},     # a headless pod name
]


@pytest.fixture
def kube3(kube_lab: RunningLab) -> dict:
    """The shared cluster lab's status, as `labkit verify` reads it."""
    return lab.status(kube_lab.name)[0]


def by_index(report: verify.Report) -> dict[int, verify.CheckResult]:
    return {r.index: r for r in report.results}


def test_the_expected_checks_pass(kube3: dict) -> None:
    report = verify.run_checks(kube3, CHECKS)
    assert [r.line() for r in report.mismatches] == []
    assert report.ok and report.exit_code == 0 and len(report.results) == len(CHECKS)
    results = by_index(report)
    web_pods = {p["name"] for p in kube3["pods"] if p["name"].startswith("web-")}
    web = next(s for s in kube3["services"] if (s["namespace"], s["name"]) == ("default", "web"))
    web_ip = web["cluster_ip"]
    # the name went through the cluster DNS (A, and AAAA in a dual-stack lab: the lab's families in the
    # cluster's order), the connection to a backend that answered with its hostname, over the first
    assert results[0].addresses == tuple(web["cluster_ips"]) and results[0].address == web_ip
    assert results[0].reason.removeprefix("connected (").removesuffix(")") in web_pods
    assert results[3].address == next(n["mgmt_ipv4"] for n in kube3["nodes"] if n["name"] == "cp")
    assert results[4].actual == web_ip
    assert results[2].reason == "connection refused"
    assert results[8].reason.startswith("name not resolved: NXDOMAIN (tried web.team-a.svc.cluster.local., ")


def test_a_service_without_endpoints_is_refused_at_once(kube3: dict) -> None:
    report = verify.run_checks(kube3, [{"from": "default/client", "to": "nobody.default:80", "result": "closed"}],
                               timeout=5)
    assert report.ok and report.results[0].reason == "connection refused"  # refused, not a 5 s timeout


def test_node_port_on_every_node_from_outside(kube3: dict) -> None:
    report = verify.run_checks(kube3, [{"from": "ext", "to": f"{node}:30080", "result": "open"}
                                       for node in ("cp", "w1", "w2")])
    assert [r.line() for r in report.mismatches] == []


def test_udp_to_the_cluster_dns_by_address_and_a_closed_udp_port(kube3: dict) -> None:
    report = verify.run_checks(kube3, [
        {"from": "default/client", "to": f"{kube3['dns']['ip']}:53", "protocol": "udp", "result": "open"},
        {"from": "default/client", "to": "kube-dns.kube-system:53", "result": "open"},      # DNS over TCP too
        {"from": "team-a/probe", "to": "team-a/db-0:5353", "protocol": "udp", "result": "closed"},
    ])
    assert [r.line() for r in report.mismatches] == []
    assert report.results[2].reason == "port unreachable"


def test_a_wrong_expectation_is_a_mismatch_with_exit_code_1(kube3: dict) -> None:
    report = verify.run_checks(kube3, [
        {"from": "default/client", "to": "web:80", "result": "open"},
        {"from": "default/client", "to": "nobody.default:80", "result": "open"},           # wrong
        {"from": "default/client", "resolve": "web", "result": "NXDOMAIN"},                # wrong
    ])
    assert report.exit_code == 1
    web_ip = next(s["cluster_ip"] for s in kube3["services"] if s["name"] == "web")
    assert [r.line() for r in report.mismatches] == [
        "default/client -> nobody.default:80 expected open, got closed (connection refused)",
        f"default/client resolve web expected NXDOMAIN, got {web_ip} "
        f"(web.default.svc.cluster.local. -> {web_ip})",
    ]
    out = io.StringIO()
    assert verify.print_report(report, file=out) == 1
    text = out.getvalue()
    assert "X!" in text.splitlines()[1]
    assert "default/client -> nobody.default:80 expected open, got closed (connection refused)" in text


def test_unknown_names_are_reported_not_raised(kube3: dict) -> None:
    report = verify.run_checks(kube3, [
        {"from": "default/ghost", "to": "web:80", "result": "open"},
        {"from": "default/client", "to": "web:80", "result": "open"},
    ])
    first, second = report.results
    assert (first.actual, second.actual) == ("error", "open")
    assert first.reason.startswith("lab ") and "has no pod 'default/ghost' (pods: default/client, " in first.reason


def test_served_ports_in_pods_and_nodes(kube3: dict) -> None:
    checks = [
        {"from": "default/client", "to": "team-a/probe:9000", "result": "open"},
        {"from": "default/client", "to": "team-a/probe:9053", "protocol": "udp", "result": "open"},
        {"from": "default/client", "to": "team-a/probe:9001", "result": "closed"},
        {"from": "ext", "to": "w1:9100", "result": "open"},
    ]
    with verify.serve_ports(kube3, {"team-a/probe": [9000, "9053/udp"], "w1": ["9100/tcp"]}) as servers:
        assert servers.ports == {"team-a/probe": {"tcp": [9000], "udp": [9053]}, "w1": {"tcp": [9100], "udp": []}}
        report = verify.run_checks(kube3, checks)
        assert [r.line() for r in report.mismatches] == []
        assert report.results[0].reason == "connected (probe)"
        assert report.results[1].reason == "reply (probe)"
        assert report.results[3].reason == "connected (w1)"
        pids = [p.pid for p in servers.procs.values()]
    assert all(not os.path.exists(f"/proc/{pid}") for pid in pids)
    after = verify.run_checks(kube3, checks[:1])
    assert after.results[0].actual == "closed"


def test_verify_a_topology_file_with_expect(kube_lab: RunningLab, kube3: dict, tmp_path: Path) -> None:
    topo = yaml.safe_load(kube_lab.topology.read_text())
    topo["workloads"] = [str(kube_lab.topology.parent / w) for w in topo["workloads"]]
    topo["expect"] = CHECKS[:4] + [{"from": "default/client", "to": "web:80", "result": "closed"}]
    path = tmp_path / "kube3.yaml"
    path.write_text(yaml.safe_dump(topo, sort_keys=False))
    report = lab.verify_topology(str(path), name=kube3["name"])
    assert len(report.results) == 5
    assert [r.line().split(" (")[0] for r in report.mismatches] == [
        "default/client -> web:80 expected closed, got open"]
    report = lab.verify_lab(kube3["name"], CHECKS[:2])
    assert report.ok


def test_the_agent_runs_in_any_namespace_of_the_lab(kube3: dict) -> None:
    pod = next(p for p in kube3["pods"] if (p["namespace"], p["name"]) == ("default", "client"))
    argv = verify.agent_argv(pod["netns_path"], "resolve", "kube-dns.kube-system", "--nameserver",
                             kube3["dns"]["ip"], "--search", "default.svc.cluster.local svc.cluster.local",
                             "--ndots", "5")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    assert (out.returncode, out.stdout.strip()) == (0, kube3["dns"]["ip"])
