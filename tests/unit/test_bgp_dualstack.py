"""BGP over both families, Calico's way: an IPv4 and an IPv6 session per peer between the node addresses
of each family, a podCIDR of each family originated, a kernel protocol per table; the BIRD configs as
golden files (IPv4-only rendered byte for byte as before the IPv6 work; dual-stack), each one BIRD accepts.

Regenerate a golden after an intended change: LABKIT_GOLDEN=write pytest tests/unit/test_bgp_dualstack.py
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import subprocess
from pathlib import Path

import pytest

from labkit import bgp
from labkit.bgp.daemon import BirdFiles
from labkit.topology import load_plan

ROOT = Path(__file__).resolve().parents[2]
KUBE_BGP = ROOT / "topologies" / "kube-bgp.yaml"
GOLDEN = Path(__file__).parent / "golden"
FILES = BirdFiles("/run/labkit/LAB/bgp/NODE", "/run/labkit/LAB")  # fixed paths: the goldens hold no tmp dirs
LB = {"w1": [bgp.Prefix("198.51.100.1/32", "LoadBalancer of service default/web"),
             bgp.Prefix("fd00:198:51:100::1/128", "LoadBalancer of service default/web")]}


def _dual_stack_plan(tmp_path: Path):
    """kube-bgp.yaml with IPv6 pod and service CIDRs, every node given its mgmt IPv6 (fd00:172:31::N, N
    as in its IPv4 address) the way the mgmt pass gives it."""
    text = KUBE_BGP.read_text().replace("pod-cidr: 10.244.0.0/16", "pod-cidr: 10.244.0.0/16,fd00:10:244::/56")
    text = text.replace("service-cidr: 10.96.0.0/16", "service-cidr: 10.96.0.0/16,fd00:10:96::/112")
    text = text.replace("workloads/kube-apps.yaml", str(KUBE_BGP.parent / "workloads" / "kube-apps.yaml"))
    path = tmp_path / "kube-bgp-dual.yaml"
    path.write_text(text)
    plan = load_plan(path)
    nodes = tuple(dataclasses.replace(n, mgmt_ipv6=ipaddress.IPv6Interface(
        f"fd00:172:31::{n.mgmt_ipv4.ip.packed[3]:x}/64")) if n.mgmt_ipv4 is not None else n for n in plan.nodes)
    return dataclasses.replace(plan, nodes=nodes)


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("LABKIT_GOLDEN") == "write":
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from its golden (LABKIT_GOLDEN=write to accept a change)"


def _bird_accepts(text: str, tmp_path: Path) -> None:
    conf = tmp_path / "bird.conf"
    conf.write_text(text)
    proc = subprocess.run(["bird", "-p", "-c", str(conf)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_a_session_per_family_between_the_node_addresses_of_that_family(tmp_path: Path) -> None:
    found = {s.node: s for s in bgp.speakers(_dual_stack_plan(tmp_path))}
    w1 = found["w1"]
    assert (w1.router_id, w1.families) == ("172.31.0.3", (4, 6))  # BGP's router id is 32 bits: the IPv4 one
    assert [(s.name, s.address, s.source, s.family) for s in w1.sessions] == [
        ("node_cp", "172.31.0.2", "172.31.0.3", 4), ("node_cp_v6", "fd00:172:31::2", "fd00:172:31::3", 6),
        ("node_w2", "172.31.0.4", "172.31.0.3", 4), ("node_w2_v6", "fd00:172:31::4", "fd00:172:31::3", 6),
        ("peer_tor", "172.31.0.5", "172.31.0.3", 4), ("peer_tor_v6", "fd00:172:31::5", "fd00:172:31::3", 6)]
    assert [p.prefix for p in w1.install] == ["10.244.1.0/24", "fd00:10:244:1::/64"]
    tor = found["tor"]
    assert (tor.router_id, tor.families, tor.connected) == ("172.31.0.5", (4, 6), ("eth1",))
    assert [s.name for s in tor.sessions] == ["node_cp", "node_cp_v6", "node_w1", "node_w1_v6", "node_w2",
                                              "node_w2_v6"]
    assert w1.as_status()["sessions"][1] == {"name": "node_cp_v6", "peer": "cp", "address": "fd00:172:31::2",
                                             "asn": 64512, "family": 6}


def test_ipv4_only_configs_are_as_before(tmp_path: Path) -> None:
    """The golden was rendered by the template before it knew IPv6: an IPv4 lab's BIRD gets the same file."""
    w1 = {s.node: s for s in bgp.speakers(load_plan(KUBE_BGP), announce={"w1": LB["w1"][:1]})}["w1"]
    assert w1.families == (4,) and all(s.family == 4 for s in w1.sessions)
    text = bgp.render("kubebgp", w1, FILES)
    _golden("bird-ipv4-w1.conf", text)
    assert "ipv6" not in text and "kernel6" not in text
    _bird_accepts(text, tmp_path)


@pytest.mark.parametrize("node", ["w1", "tor"])
def test_dual_stack_configs(node: str, tmp_path: Path) -> None:
    speaker = {s.node: s for s in bgp.speakers(_dual_stack_plan(tmp_path), announce=LB)}[node]
    text = bgp.render("kubebgp", speaker, FILES)
    _golden(f"bird-dualstack-{node}.conf", text)
    _bird_accepts(text, tmp_path)
    if node == "w1":
        assert "protocol static own6 {\n  ipv6;\n  route fd00:10:244:1::/64 blackhole;" in text
        assert "protocol static announce6 {\n  ipv6;\n  route fd00:198:51:100::1/128 blackhole;" in text
        assert 'protocol kernel kernel6 {\n  ipv6 {' in text and 'if proto = "own6" then accept;' in text
        v6_session = text.split("protocol bgp node_cp_v6 from peer {", 1)[1].split("\n}\n", 1)[0]
        assert "neighbor fd00:172:31::2 as 64512;" in v6_session and "source address fd00:172:31::3;" in v6_session
        assert "ipv6 {" in v6_session and "ipv4" not in v6_session
    else:
        assert "protocol direct connected {\n  ipv4;\n  ipv6;" in text and text.count("merge paths on;") == 2


def test_an_ipv6_only_cluster_runs_ipv6_sessions_only(tmp_path: Path) -> None:
    dual = _dual_stack_plan(tmp_path)  # then IPv6 only: the cluster's and each node's IPv6 pod CIDR alone
    assert dual.cluster is not None
    cluster = dataclasses.replace(dual.cluster, pod_cidrs=dual.cluster.pod_cidrs[1:])
    plan = dataclasses.replace(dual, cluster=cluster, nodes=tuple(
        dataclasses.replace(n, pod_cidrs=n.pod_cidrs[1:], pod_cidr=n.pod_cidrs[1]) if n.pod_cidrs else n
        for n in dual.nodes))
    assert plan.cluster is not None and plan.cluster.families == (6,)
    found = {s.node: s for s in bgp.speakers(plan)}
    w1 = found["w1"]
    assert (w1.router_id, w1.families) == ("172.31.0.3", (6,))  # the node network's IPv4 still names it
    assert [s.name for s in w1.sessions] == ["node_cp_v6", "node_w2_v6", "peer_tor_v6"]
    assert [p.prefix for p in w1.install] == ["fd00:10:244:1::/64"]
    text = bgp.render("kubebgp", w1, FILES)
    assert "ipv4" not in text and "protocol static own6" in text and "protocol static own {" not in text
    _bird_accepts(text, tmp_path)
