"""`labkit status --format json` of a dual-stack plan (no root needed: lab.summarize), and of an IPv4 one."""

from __future__ import annotations

from pathlib import Path

from labkit.graph import render_graph
from labkit.lab import summarize
from labkit.topology import load_plan

ROOT = Path(__file__).resolve().parents[2]
DUAL = """name: ds
cluster: {pod-cidr: "10.244.0.0/16,fd00:10:244::/56", service-cidr: "10.96.0.0/16,fd00:10:96::/112"}
topology:
  nodes:
    cp: {kind: k8s-node}
    w1: {kind: k8s-node}
"""


def test_a_dual_stack_cluster_in_status(tmp_path: Path) -> None:
    topology = tmp_path / "ds.yaml"
    topology.write_text(DUAL)
    summary = summarize(load_plan(str(topology)))
    assert summary["cluster"] == {"ip_families": ["IPv4", "IPv6"], "pod_cidrs": ["10.244.0.0/16", "fd00:10:244::/56"],
                                  "service_cidrs": ["10.96.0.0/16", "fd00:10:96::/112"]}
    # `ip` stays the preferred family's; `ips` has both
    assert summary["dns"] == {"ip": "10.96.0.10", "ips": ["10.96.0.10", "fd00:10:96::a"], "domain": "cluster.local"}
    w1 = summary["nodes"][1]
    assert w1["pod_cidr"] == "10.244.1.0/24" and w1["pod_cidrs"] == ["10.244.1.0/24", "fd00:10:244:1::/64"]
    assert "mgmt_ipv6" in w1 and all("ipv6" in i for i in w1["interfaces"])
    assert "subnet6" in summary["mgmt"]
    assert "pods 10.244.1.0/24, fd00:10:244:1::/64" in render_graph(summary, "mermaid")


def test_an_ipv4_cluster_keeps_every_key_it_had() -> None:
    summary = summarize(load_plan(str(ROOT / "topologies" / "kube-3node.yaml")))
    cp = summary["nodes"][0]
    assert (cp["mgmt_ipv4"], cp["pod_cidr"], cp["pod_cidrs"], cp["mgmt_ipv6"]) == (
        "172.31.0.2", "10.244.0.0/24", ["10.244.0.0/24"], None)
    assert cp["interfaces"][0] == {"name": "eth0", "ipv4": ["172.31.0.2/24"], "ipv6": [], "peer": None}
    assert summary["dns"] == {"ip": "10.96.0.10", "ips": ["10.96.0.10"], "domain": "cluster.local"}
    assert summary["cluster"]["ip_families"] == ["IPv4"] and summary["mgmt"]["subnet6"] is None
