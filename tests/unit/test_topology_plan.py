"""Good topologies: loading, inheritance, addressing and naming in the plan (no root, nothing built)."""

from __future__ import annotations

import dataclasses
import ipaddress
import textwrap
from pathlib import Path

import pydantic
import pytest

from labkit.errors import InputError
from labkit.topology import load_plan, load_topology
from labkit.topology.expand import effective_settings
from labkit.topology.plan import MGMT_IFNAME, LinkPlan, NodePlan, Plan, netns_prefix

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "topologies").glob("*.yaml"))
GOOD = ROOT / "tests" / "topologies" / "good"


def _write(tmp_path: Path, text: str, name: str = "topo.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _plan(tmp_path: Path, text: str) -> Plan:
    return load_plan(_write(tmp_path, text))


def _all_plans() -> list[Path]:
    return [*SHIPPED, *sorted(GOOD.glob("*.y*ml"))]


# ---------------------------------------------------------------- shipped and good files


def test_there_are_shipped_topologies() -> None:
    assert SHIPPED, "topologies/*.yaml is empty"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_topology_validates(path: Path) -> None:
    plan = load_plan(path)
    assert plan.nodes
    assert plan.lab == load_topology(path)[0].name


@pytest.mark.parametrize("path", _all_plans(), ids=lambda p: p.name)
def test_names_carry_the_lab_prefix_and_fit_the_kernel(path: Path) -> None:
    plan = load_plan(path)
    prefix = f"lk-{plan.lab}."
    assert plan.netns_prefix == prefix == netns_prefix(plan.lab)
    for node in plan.nodes:
        assert node.netns == prefix + node.name
        for iface in node.interfaces:
            assert 1 <= len(iface.name) <= 15, (node.name, iface.name)
    if plan.mgmt is not None:
        assert plan.mgmt.netns.startswith(prefix)
        assert len(plan.mgmt.bridge) <= 15
        assert len(plan.mgmt.host_ifname) <= 15


@pytest.mark.parametrize("path", _all_plans(), ids=lambda p: p.name)
def test_every_link_is_wired_both_ways(path: Path) -> None:
    plan = load_plan(path)
    for link in plan.links:
        a = plan.node(link.a.node).interface(link.a.ifname)
        b = plan.node(link.b.node).interface(link.b.ifname)
        assert (a.peer_node, a.peer_ifname) == (link.b.node, link.b.ifname)
        assert (b.peer_node, b.peer_ifname) == (link.a.node, link.a.ifname)


def test_longest_lab_and_node_names_still_fit(tmp_path: Path) -> None:
    plan = _plan(tmp_path, """
        name: abcdefghijkl
        mgmt: {ipv4-subnet: 172.31.0.0/24, host-access: true}
        topology:
          nodes:
            abcdefghijklmno: {kind: linux}
            h2: {kind: linux}
          links:
            - endpoints: ["abcdefghijklmno:abcdefghijklmno", "h2:eth1"]
    """)
    assert plan.node("abcdefghijklmno").netns == "lk-abcdefghijkl.abcdefghijklmno"
    assert len(plan.mgmt.host_ifname) <= 15
    assert all(len(i.name) <= 15 for n in plan.nodes for i in n.interfaces)


# ---------------------------------------------------------------- inheritance


FOUR_LEVELS = """
    name: inherit
    topology:
      defaults:
        kind: linux
        image: img-defaults
        exec: ["echo defaults"]
        sysctls: {net.ipv4.ip_forward: 0, net.ipv4.conf.all.rp_filter: 0, net.core.somaxconn: 1}
        env: {A: defaults}
      kinds:
        linux:
          image: img-kind
          exec: ["echo kind"]
          sysctls: {net.ipv4.ip_forward: 1, net.ipv4.tcp_syncookies: 1}
      groups:
        routers:
          exec: ["echo group", "echo group again"]
          sysctls: {net.ipv4.conf.all.rp_filter: 2}
      nodes:
        r1:
          group: routers
          sysctls: {net.core.somaxconn: 4096}
        r2:
          group: routers
          image: img-node
          exec: ["echo node"]
        h1: {}
        b1: {kind: bridge}
"""


def test_inheritance_node_group_kind_defaults(tmp_path: Path) -> None:
    plan = _plan(tmp_path, FOUR_LEVELS)
    r1, r2, h1, b1 = (plan.node(n) for n in ("r1", "r2", "h1", "b1"))

    # kind from defaults; image: kind beats defaults; exec: group beats kind
    assert r1.kind == "linux"
    assert r1.image == "img-kind"
    assert r1.exec == (("echo", "group"), ("echo", "group", "again"))
    # sysctls merge key by key, the most specific level winning each key
    assert dict(r1.sysctls) == {
        "net.ipv4.ip_forward": "1",           # kind over defaults
        "net.ipv4.conf.all.rp_filter": "2",   # group over defaults
        "net.core.somaxconn": "4096",         # node over defaults
        "net.ipv4.tcp_syncookies": "1",       # kind only
    }
    # node beats everything for whole-valued settings
    assert r2.image == "img-node"
    assert r2.exec == (("echo", "node"),)
    assert dict(r2.sysctls)["net.core.somaxconn"] == "1"
    # no group: kind and defaults only
    assert h1.exec == (("echo", "kind"),)
    assert dict(h1.sysctls)["net.ipv4.conf.all.rp_filter"] == "0"
    # a kind with no `kinds:` entry inherits the defaults only
    assert b1.kind == "bridge"
    assert b1.image == "img-defaults"
    assert b1.exec == (("echo", "defaults"),)


def test_effective_settings_merge_mappings_and_replace_lists(tmp_path: Path) -> None:
    topo, _ = load_topology(_write(tmp_path, FOUR_LEVELS))
    body = topo.topology
    r1 = effective_settings(body, body.nodes["r1"])
    assert r1["kind"] == "linux"
    assert r1["env"] == {"A": "defaults"}
    assert r1["exec"] == ["echo group", "echo group again"]
    assert "group" not in r1 and "mgmt_ipv4" not in r1


def test_kind_can_come_from_the_group(tmp_path: Path) -> None:
    plan = _plan(tmp_path, """
        name: grpkind
        topology:
          kinds:
            bridge: {image: img-bridge}
          groups:
            switches: {kind: bridge}
          nodes:
            sw: {group: switches}
    """)
    assert plan.node("sw").kind == "bridge"
    assert plan.node("sw").image == "img-bridge"


# ---------------------------------------------------------------- link forms


BRIEF = """
    name: forms
    topology:
      nodes:
        h1: {kind: linux}
        h2: {kind: linux}
      links:
        - endpoints: ["h1:eth1", "h2:eth1"]
          ipv4: [10.0.0.1/24, 10.0.0.2/24]
          mtu: 1400
"""
EXTENDED = """
    name: forms
    topology:
      nodes:
        h1: {kind: linux}
        h2: {kind: linux}
      links:
        - type: veth
          mtu: 1400
          endpoints:
            - {node: h1, interface: eth1, ipv4: 10.0.0.1/24}
            - node: h2
              interface: eth1
              ipv4: 10.0.0.2/24
"""


def test_brief_and_extended_links_give_the_same_plan(tmp_path: Path) -> None:
    brief = load_plan(_write(tmp_path, BRIEF, "brief.yaml"))
    extended = load_plan(_write(tmp_path, EXTENDED, "extended.yaml"))
    assert dataclasses.replace(brief, source="") == dataclasses.replace(extended, source="")
    assert brief.links == (LinkPlan(brief.links[0].a, brief.links[0].b, 1400),)
    eth1 = brief.node("h1").interface("eth1")
    assert eth1.addresses == (ipaddress.IPv4Interface("10.0.0.1/24"),)
    assert eth1.mtu == 1400
    assert (eth1.peer_node, eth1.peer_ifname) == ("h2", "eth1")


def test_endpoint_mtu_beats_link_mtu(tmp_path: Path) -> None:
    plan = _plan(tmp_path, """
        name: mtus
        topology:
          nodes:
            h1: {kind: linux}
            h2: {kind: linux}
          links:
            - mtu: 1400
              endpoints:
                - {node: h1, interface: eth1, mtu: 9000}
                - h2:eth1
    """)
    assert plan.node("h1").interface("eth1").mtu == 9000
    assert plan.node("h2").interface("eth1").mtu == 1400


# ---------------------------------------------------------------- mgmt network


def test_mgmt_addresses_in_node_order_from_dot_two(tmp_path: Path) -> None:
    plan = _plan(tmp_path, """
        name: mgmt
        mgmt: {ipv4-subnet: 172.24.0.0/24}
        topology:
          nodes:
            zz: {kind: linux}
            sw: {kind: bridge}
            aa: {kind: linux}
            pinned: {kind: linux, mgmt-ipv4: 172.24.0.3}
            mm: {kind: linux}
    """)
    assert plan.mgmt.gateway == ipaddress.IPv4Interface("172.24.0.1/24")
    assert plan.mgmt.subnet == ipaddress.IPv4Network("172.24.0.0/24")
    got = {n.name: str(n.mgmt_ipv4) if n.mgmt_ipv4 else None for n in plan.nodes}
    # file order, not name order; bridges get none; an explicit address is kept and skipped
    assert got == {
        "zz": "172.24.0.2/24", "sw": None, "aa": "172.24.0.4/24",
        "pinned": "172.24.0.3/24", "mm": "172.24.0.5/24",
    }
    for node in plan.nodes:
        if node.mgmt_ipv4 is not None:
            assert node.interfaces[0].name == MGMT_IFNAME
            assert node.interfaces[0].addresses == (node.mgmt_ipv4,)
        else:
            assert MGMT_IFNAME not in {i.name for i in node.interfaces}


def test_no_mgmt_section_no_eth0(tmp_path: Path) -> None:
    plan = _plan(tmp_path, BRIEF)
    assert plan.mgmt is None
    assert all(n.mgmt_ipv4 is None for n in plan.nodes)
    assert all(i.name != MGMT_IFNAME for n in plan.nodes for i in n.interfaces)


def test_without_mgmt_eth0_may_carry_a_link(tmp_path: Path) -> None:
    plan = _plan(tmp_path, """
        name: eth0ok
        topology:
          nodes:
            h1: {kind: linux}
            h2: {kind: linux}
          links:
            - endpoints: ["h1:eth0", "h2:eth0"]
    """)
    assert plan.node("h1").interface("eth0").peer_node == "h2"


# ---------------------------------------------------------------- cluster


CLUSTER = """
    name: kube
    cluster:
      pod-cidr: 10.200.0.0/16
      service-cidr: 10.100.0.0/16
      cni: {backend: vxlan, mtu: 1450}
      dns: {ip: 10.100.0.53, replicas: 2}
    topology:
      nodes:
        cp: {kind: k8s-node}
        ext: {kind: linux}
        w1: {kind: k8s-node}
        w2: {kind: k8s-node}
      links:
        - endpoints: ["ext:eth1", "cp:eth1"]
          ipv4: [192.168.50.1/24, 192.168.50.2/24]
"""


def test_pod_cidrs_are_24s_of_pod_cidr_in_k8s_node_order(tmp_path: Path) -> None:
    plan = _plan(tmp_path, CLUSTER)
    cidrs = {n.name: n.pod_cidr for n in plan.nodes}
    net = ipaddress.IPv4Network
    assert cidrs == {
        "cp": net("10.200.0.0/24"), "ext": None, "w1": net("10.200.1.0/24"), "w2": net("10.200.2.0/24"),
    }
    c = plan.cluster
    assert (c.pod_cidr, c.service_cidr) == (net("10.200.0.0/16"), net("10.100.0.0/16"))
    assert (c.backend, c.mtu, str(c.dns_ip), c.dns_replicas) == ("vxlan", 1450, "10.100.0.53", 2)


def test_a_cluster_brings_a_default_mgmt_network(tmp_path: Path) -> None:
    plan = _plan(tmp_path, CLUSTER)
    assert plan.mgmt is not None
    assert plan.mgmt.subnet == ipaddress.IPv4Network("172.31.0.0/24")
    assert [str(n.mgmt_ipv4.ip) for n in plan.nodes] == ["172.31.0.2", "172.31.0.3", "172.31.0.4", "172.31.0.5"]


def test_cluster_defaults(tmp_path: Path) -> None:
    plan = _plan(tmp_path, """
        name: defaults
        cluster: {}
        topology:
          nodes:
            cp: {kind: k8s-node}
    """)
    c = plan.cluster
    assert (c.domain, str(c.pod_cidr), str(c.service_cidr)) == ("cluster.local", "10.244.0.0/16", "10.96.0.0/16")
    assert (c.backend, str(c.dns_ip), c.dns_replicas) == ("host-gw", "10.96.0.10", 1)
    assert plan.node("cp").pod_cidr == ipaddress.IPv4Network("10.244.0.0/24")


# ---------------------------------------------------------------- immutability


def test_plan_is_immutable(tmp_path: Path) -> None:
    plan = _plan(tmp_path, CLUSTER)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.lab = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.nodes[0].name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.nodes[0].interfaces[0].addresses = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.links[0].a.node = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.mgmt.subnet = None  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.cluster.backend = "x"  # type: ignore[misc]


def _frozen_all_the_way(value: object, where: str = "plan") -> None:
    """Every dataclass in the plan is frozen and every collection a tuple."""
    assert not isinstance(value, (list, dict, set)), f"{where} is a mutable {type(value).__name__}"
    if dataclasses.is_dataclass(value):
        assert type(value).__dataclass_params__.frozen, f"{where}: {type(value).__name__} is not frozen"
        for f in dataclasses.fields(value):
            if f.name in ("workloads", "expects"):  # data the plan carries, not the plan's own structure
                continue
            _frozen_all_the_way(getattr(value, f.name), f"{where}.{f.name}")
    elif isinstance(value, tuple):
        for i, item in enumerate(value):
            _frozen_all_the_way(item, f"{where}[{i}]")


@pytest.mark.parametrize("path", _all_plans(), ids=lambda p: p.name)
def test_plan_holds_only_frozen_values(path: Path) -> None:
    _frozen_all_the_way(load_plan(path))


def test_plan_types_are_frozen_dataclasses() -> None:
    for cls in (Plan, NodePlan, LinkPlan):
        assert cls.__dataclass_params__.frozen


def test_topology_model_is_frozen(tmp_path: Path) -> None:
    topo, _ = load_topology(_write(tmp_path, BRIEF))
    with pytest.raises(pydantic.ValidationError):
        topo.name = "other"  # type: ignore[misc]


def test_loading_twice_gives_equal_plans(tmp_path: Path) -> None:
    path = _write(tmp_path, CLUSTER)
    assert load_plan(path) == load_plan(path)


# ---------------------------------------------------------------- containerlab


def test_containerlab_file_loads_as_it_is() -> None:
    path = GOOD / "srl-free.clab.yml"
    topo, _ = load_topology(path)
    assert topo.mgmt is not None and topo.mgmt.network == "srl-free-mgmt"
    assert topo.topology.nodes["client1"].binds == ["./configs/client1:/config"]

    plan = load_plan(path)
    assert plan.lab == "srl-free"
    assert [(n.name, n.kind) for n in plan.nodes] == [
        ("client1", "linux"), ("client2", "linux"), ("router", "linux"), ("server", "linux"), ("br1", "bridge"),
    ]
    assert plan.node("client1").image == "alpine"          # the node's own image
    assert plan.node("router").image == "alpine:3.20"      # from kinds.linux
    assert plan.node("client1").exec[0] == ("ip", "addr", "add", "10.0.0.1/24", "dev", "eth1")
    assert str(plan.node("client1").mgmt_ipv4) == "172.20.20.21/24"  # explicit mgmt-ipv4
    assert str(plan.node("client2").mgmt_ipv4) == "172.20.20.2/24"
    assert plan.node("br1").mgmt_ipv4 is None
    assert {i.name for i in plan.node("br1").interfaces} == {"eth1", "eth2", "eth3"}
    assert len(plan.links) == 4
    assert plan.node("router").kind == "linux"  # `group: core` is not defined: a label, inheriting nothing


# ---------------------------------------------------------------- errors collected, not first-only


def test_problems_are_collected_with_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, """
        name: many
        topology:
          nodes:
            h1: {kind: linux}
            h2: {kind: router}
          links:
            - endpoints: ["h1:eth1", "h9:eth1"]
    """)
    with pytest.raises(InputError) as info:
        load_plan(path)
    problems = info.value.problems
    assert [(p.line, p.field) for p in problems] == [
        (6, "topology.nodes.h2.kind"), (8, "topology.links[0].endpoints[1]"),
    ]
    assert all(p.file == str(path) for p in problems)


# ---------------------------------------------------------------- runtime and name overrides


def test_runtime_from_file_or_from_the_caller(tmp_path: Path) -> None:
    path = _write(tmp_path, BRIEF)
    assert load_plan(path).runtime == "netns"
    assert load_plan(path, runtime="docker").runtime == "docker"
    docker = _write(tmp_path, BRIEF.replace("name: forms", "name: forms\n    runtime: docker"), "d.yaml")
    assert load_plan(docker).runtime == "docker"


def test_plan_source_is_the_path_given(tmp_path: Path) -> None:
    path = _write(tmp_path, BRIEF)
    assert load_plan(path).source == str(path)


# ---------------------------------------------------------------- what the plan keeps, typed, computed once


def test_a_cluster_plan_keeps_its_workloads_and_their_allocation() -> None:
    from labkit.k8s import Workloads
    from labkit.k8s.allocate import Allocation

    plan = load_plan(ROOT / "topologies/kube-3node.yaml")
    assert isinstance(plan.workloads, Workloads) and isinstance(plan.allocation, Allocation)
    # every pod placed on a cluster node, the system's DNS pods included
    assert set(plan.allocation.placement) == {p.key for p in plan.workloads.pods}
    assert set(plan.allocation.placement.values()) <= {n.name for n in plan.cluster_nodes}
    assert any(p.namespace == "kube-system" for p in plan.workloads.pods)
    # the DNS Service at cluster.dns.ip, the other ClusterIPs in service-cidr, NodePorts as written
    assert plan.allocation.cluster_ips[("kube-system", "kube-dns")] == "10.96.0.10"
    assert all(ipaddress.IPv4Address(ip) in plan.cluster.service_cidr for ip in plan.allocation.cluster_ips.values())
    assert plan.allocation.node_ports[("default", "web-nodeport", 0)] == 30080


def test_a_plan_without_a_cluster_has_no_workloads() -> None:
    plan = load_plan(ROOT / "topologies/two-hosts.yaml")
    assert (plan.workloads, plan.allocation) == (None, None)


def test_the_plan_keeps_its_expects_typed() -> None:
    from labkit.topology.expect import Expect, Target

    plan = load_plan(ROOT / "topologies/kube-3node.yaml")
    assert plan.expects and all(isinstance(e, Expect) for e in plan.expects)
    assert plan.expects[0].to == Target("name", "web.default.svc.cluster.local", 80)
    assert plan.expects[-1].resolve == "nope.default" and plan.expects[-1].result == "NXDOMAIN"


def test_service_views_use_the_plans_allocation() -> None:
    from labkit.proxy import build_service_view

    plan = load_plan(ROOT / "topologies/kube-3node.yaml")
    views = build_service_view(plan.workloads, {}, allocation=plan.allocation)
    assert {(v.namespace, v.name): v.cluster_ip for v in views if v.cluster_ip} == dict(plan.allocation.cluster_ips)


def test_build_plan_is_a_list_of_named_passes() -> None:
    from labkit.topology.plan import PASSES

    assert [p.__name__ for p in PASSES] == [
        "check_kind_definitions", "resolve_nodes", "plan_cluster", "check_cluster_nodes", "plan_links",
        "check_link_subnets", "plan_mgmt", "plan_bgp_settings", "check_cluster_cidrs", "assign_pod_cidrs",
        "plan_nodes", "check_order", "check_ports", "collect_notes",
    ]
    assert all(p.__doc__ for p in PASSES)


def test_the_plan_has_no_untyped_fields() -> None:
    import typing

    from labkit.topology import plan as plan_module

    hints = typing.get_type_hints(Plan, vars(plan_module) | _plan_type_names())
    assert all(hint is not typing.Any and "Any" not in str(hint) for hint in hints.values()), hints


def _plan_type_names() -> dict[str, object]:
    from labkit.k8s import Workloads
    from labkit.k8s.allocate import Allocation
    from labkit.topology.expect import Expect

    return {"Workloads": Workloads, "Allocation": Allocation, "Expect": Expect}
