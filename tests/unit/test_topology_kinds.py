"""Node kinds: one typed registry; every list of valid kinds and every question about a kind comes from it."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from labkit.errors import InputError
from labkit.topology import kinds, load_plan
from labkit.topology.schema import NODE_KINDS

ROOT = Path(__file__).resolve().parents[2]


def test_the_registry_holds_the_kinds_in_order() -> None:
    assert kinds.names() == ("linux", "bridge", "k8s-node", "docker-host")
    assert NODE_KINDS == kinds.names()
    assert [k.name for k in kinds.REGISTRY if k.cluster_node] == ["k8s-node"]
    assert [k.name for k in kinds.REGISTRY if k.l2_bridge] == ["bridge"]
    assert dict(kinds.get("k8s-node").sysctls) == {"net.ipv4.ip_forward": "1"}
    assert [k.name for k in kinds.REGISTRY if k.container_host] == ["docker-host"]
    assert [k.name for k in kinds.REGISTRY if k.runs_pods] == ["k8s-node", "docker-host"]


def test_an_unknown_kind_is_one_error_listing_the_valid_ones() -> None:
    with pytest.raises(kinds.UnknownKind) as info:
        kinds.get("router")
    assert str(info.value) == "unknown kind 'router'; valid: linux, bridge, k8s-node, docker-host"


def test_a_kind_is_registered_once() -> None:
    registry = kinds.Registry([kinds.LINUX])
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(kinds.NodeKind("linux", "again"))


def test_a_new_kind_is_one_record_and_one_registry_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    router = kinds.NodeKind("router", "a host that forwards", sysctls={"net.ipv4.ip_forward": "1"})
    registry = kinds.Registry([*kinds.REGISTRY, router])
    monkeypatch.setattr(kinds, "REGISTRY", registry)
    monkeypatch.setattr(kinds, "get", registry.get)
    monkeypatch.setattr(kinds, "names", registry.names)
    path = tmp_path / "t.yaml"
    path.write_text("name: r\ntopology:\n  nodes:\n    r1: {kind: router}\n")
    node = load_plan(path).node("r1")
    assert node.kind_info is router
    assert node.sysctls == (("net.ipv4.ip_forward", "1"),)


def test_plan_nodes_answer_from_their_kind(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(textwrap.dedent("""\
        name: mix
        cluster: {}
        topology:
          nodes:
            cp: {kind: k8s-node}
            sw: {kind: bridge}
            h1: {kind: linux}
    """))
    plan = load_plan(path)
    assert [n.name for n in plan.cluster_nodes] == ["cp"]
    assert plan.node("sw").kind_info.l2_bridge and not plan.node("sw").kind_info.has_mgmt_interface
    assert plan.node("cp").mgmt_ipv4 is not None and plan.node("sw").mgmt_ipv4 is None


def test_no_kind_is_compared_by_name_outside_the_registry() -> None:
    """Kind names appear in labkit's code only in kinds.py (docs and messages aside)."""
    compare = re.compile(r"""kind\)? *(==|!=|in) *\(?["'](linux|bridge|k8s-node)["']""")
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in (ROOT / "labkit").rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1) if compare.search(line)]
    assert offenders == []


def test_cni_backend_names_live_in_the_plan_layer(tmp_path: Path) -> None:
    assert kinds.CNI_BACKENDS == ("host-gw", "vxlan", "bgp")
    path = tmp_path / "t.yaml"
    path.write_text("name: c\ncluster: {cni: {backend: calico}}\ntopology:\n  nodes: {cp: {kind: k8s-node}}\n")
    with pytest.raises(InputError) as info:
        load_plan(path)
    assert str(info.value) == f"{path}:2: cluster.cni.backend: should be 'host-gw', 'vxlan' or 'bgp' (got 'calico')"
