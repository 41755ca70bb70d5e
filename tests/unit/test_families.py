"""labkit.families (pure) and the dual-stack cluster plan built on it."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from labkit import families
from labkit.topology import load_topology
from labkit.topology.plan import build_plan


@pytest.mark.parametrize(("value", "family"), [
    ("10.0.0.1", 4), ("fd00::1", 6), ("10.0.0.0/8", 4), ("fd00::/64", 6), ("[fd00::1]", 6),
    (ipaddress.ip_interface("fd00::1/64"), 6), (ipaddress.ip_network("10.0.0.0/8"), 4),
])
def test_family_of(value, family) -> None:
    assert families.family_of(value) == family


def test_family_names_are_kubernetes_ones() -> None:
    assert families.family_name(4) == "IPv4" and families.family_name(6) == "IPv6"
    assert families.family_number("IPv6") == 6
    with pytest.raises(ValueError, match="IPv4 or IPv6"):
        families.family_number("ipv6")


@pytest.mark.parametrize(("value", "expected"), [
    ("10.244.0.0/16", ("10.244.0.0/16",)),
    ("10.244.0.0/16,fd00:10:244::/56", ("10.244.0.0/16", "fd00:10:244::/56")),
    ("fd00:10:244::/56, 10.244.0.0/16", ("fd00:10:244::/56", "10.244.0.0/16")),  # order kept: v6 preferred
    (["10.244.0.0/16", "fd00:10:244::/56"], ("10.244.0.0/16", "fd00:10:244::/56")),
])
def test_parse_cidrs_keeps_the_order(value, expected) -> None:
    assert tuple(map(str, families.parse_cidrs(value))) == expected


@pytest.mark.parametrize(("value", "message"), [
    ("10.244.0.0/16,10.245.0.0/16", "one IPv4 and one IPv6"),
    ("fd00::/64,fd01::/64", "two IPv6"),
    ("10.244.1.0/16", "host bits set"),
    ("nonsense", "is not a CIDR"),
    ("a,b,c", "got 3"),
    (42, "should be a CIDR"),
])
def test_parse_cidrs_refuses(value, message) -> None:
    with pytest.raises(ValueError, match=message):
        families.parse_cidrs(value)


def test_host_port() -> None:
    assert families.host_port("10.0.0.1", 80) == "10.0.0.1:80"
    assert families.host_port("fd00::1", 80) == "[fd00::1]:80"


def test_pick_and_families_of() -> None:
    items = ["fd00::2", "10.0.0.1", "fd00::1"]
    assert families.pick(items, 4) == "10.0.0.1" and families.pick(["10.0.0.1"], 6) is None
    assert families.families_of(items) == (6, 4)


def _plan(tmp_path: Path, cluster: str):
    path = tmp_path / "topo.yaml"
    body = "".join(f"  {line}\n" for line in cluster.splitlines())
    path.write_text(f"name: ds\ncluster:\n{body}topology:\n  nodes:\n    cp: {{kind: k8s-node}}\n"
                    "    w1: {kind: k8s-node}\n")
    topo, _ = load_topology(path)
    plan, problems = build_plan(topo, str(path))  # the cluster's own passes (workloads are the services' tests)
    assert not problems, problems
    return plan


def test_dual_stack_cluster_plan(tmp_path: Path) -> None:
    plan = _plan(tmp_path, "pod-cidr: 10.244.0.0/16,fd00:10:244::/56\nservice-cidr: 10.96.0.0/16,fd00:10:96::/112")
    c = plan.cluster
    assert c.families == (4, 6) and c.dual_stack
    assert [str(n) for n in c.service_cidrs] == ["10.96.0.0/16", "fd00:10:96::/112"]
    assert [str(a) for a in c.dns_ips] == ["10.96.0.10", "fd00:10:96::a"] and str(c.dns_ip) == "10.96.0.10"
    nodes = {n.name: n for n in plan.cluster_nodes}
    assert [str(n) for n in nodes["cp"].pod_cidrs] == ["10.244.0.0/24", "fd00:10:244::/64"]
    assert [str(n) for n in nodes["w1"].pod_cidrs] == ["10.244.1.0/24", "fd00:10:244:1::/64"]
    assert str(nodes["w1"].pod_cidr) == "10.244.1.0/24"


def test_ipv6_preferred_and_node_mask(tmp_path: Path) -> None:
    plan = _plan(tmp_path, "pod-cidr: fd00:10:244::/56,10.244.0.0/16\nservice-cidr: fd00:10:96::/112,10.96.0.0/16\n"
                           "node-mask-v6: 80\ndns: {ip: 'fd00:10:96::53'}")
    c = plan.cluster
    assert c.families == (6, 4)
    assert [str(a) for a in c.dns_ips] == ["fd00:10:96::53", "10.96.0.10"]
    assert [str(n) for n in plan.node("w1").pod_cidrs] == ["fd00:10:244:0:1::/80", "10.244.1.0/24"]


def test_single_stack_ipv4_unchanged(tmp_path: Path) -> None:
    plan = _plan(tmp_path, "pod-cidr: 10.244.0.0/16")
    assert plan.cluster.families == (4,) and not plan.cluster.dual_stack
    assert str(plan.cluster.dns_ip) == "10.96.0.10" and [str(n) for n in plan.node("cp").pod_cidrs] == ["10.244.0.0/24"]


@pytest.mark.parametrize(("text", "family", "expected"), [
    ("10.0.0.1", None, True), ("fd00::1", None, True), ("fd00::1", 6, True), ("fd00::1", 4, False),
    ("10.0.0.1", 6, False), ("web", None, False), ("10.0.0.0/8", None, False), ("[fd00::1]", None, False),
])
def test_is_ip(text, family, expected) -> None:
    assert families.is_ip(text, family) is expected
