"""The plan's IPv6 (no root): addresses per family on interfaces, the mgmt network's IPv6 and its node
addresses, IPv6 routes and sysctls, /etc/hosts per family, and IPv4-only labs planned exactly as before."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import yaml

from labkit.phases.nodes import _hosts_file
from labkit.topology import load_plan
from labkit.topology.plan import IPV6_FORWARDING

ROOT = Path(__file__).resolve().parents[2]


def _plan(tmp_path: Path, text: str):
    path = tmp_path / "lab.yaml"
    path.write_text(text, encoding="utf-8")
    return load_plan(path)


def test_an_ipv4_only_lab_has_no_ipv6_anywhere_in_its_plan() -> None:
    for name in ("routed-triangle.yaml", "two-hosts.yaml", "kube-3node.yaml", "switch.yaml"):
        plan = load_plan(ROOT / "topologies" / name)
        assert plan.mgmt is None or (plan.mgmt.subnet6 is None and plan.mgmt.gateway6 is None)
        for node in plan.nodes:
            assert node.mgmt_ipv6 is None and not node.has_ipv6
            assert all(a.version == 4 for i in node.interfaces for a in i.addresses)
            assert not any(key.startswith("net.ipv6.") for key, _ in node.sysctls)
        assert "::" not in _hosts_file(plan)


def test_link_addresses_of_both_families_in_both_forms(tmp_path: Path) -> None:
    plan = _plan(tmp_path, """
name: ds
topology:
  nodes:
    a: {kind: linux}
    b: {kind: linux}
  links:
    - endpoints: ["a:eth1", "b:eth1"]
      ipv4: [10.0.0.1/24, 10.0.0.2/24]
      ipv6: ["fd00:1::1/64", ""]
    - type: veth
      endpoints:
        - {node: a, interface: eth2, ipv6: "fd00:2::1/127"}
        - {node: b, interface: eth2, ipv6: "fd00:2::/127", ipv4: 10.0.2.1/31}
""")
    a, b = plan.node("a"), plan.node("b")
    assert a.interface("eth1").addresses == (ipaddress.ip_interface("10.0.0.1/24"),
                                             ipaddress.ip_interface("fd00:1::1/64"))
    assert b.interface("eth1").addresses == (ipaddress.ip_interface("10.0.0.2/24"),)  # "" is no address
    assert b.interface("eth2").addresses == (ipaddress.ip_interface("10.0.2.1/31"),
                                             ipaddress.ip_interface("fd00:2::/127"))  # a /127's first is fine
    assert a.has_ipv6 and plan.mgmt is None


def test_mgmt_ipv6_addresses_given_and_automatic_from_the_range(tmp_path: Path) -> None:
    plan = _plan(tmp_path, """
name: m6
mgmt:
  ipv4-subnet: 172.31.9.0/24
  ipv6-subnet: fd00:9::/64
  ipv6-gw: fd00:9::fe
  ipv6-range: fd00:9::100/120
topology:
  nodes:
    a: {kind: linux}
    sw: {kind: bridge}
    b: {kind: linux, mgmt-ipv6: "fd00:9::7"}
    c: {kind: linux}
""")
    assert plan.mgmt.subnet6 == ipaddress.IPv6Network("fd00:9::/64")
    assert plan.mgmt.gateway6 == ipaddress.IPv6Interface("fd00:9::fe/64")
    got = {n.name: str(n.mgmt_ipv6) if n.mgmt_ipv6 else None for n in plan.nodes}
    assert got == {"a": "fd00:9::100/64", "sw": None, "b": "fd00:9::7/64", "c": "fd00:9::101/64"}
    assert plan.node("a").interface("eth0").addresses == (ipaddress.ip_interface("172.31.9.2/24"),
                                                          ipaddress.ip_interface("fd00:9::100/64"))


def test_mgmt_ipv6_by_a_node_address_alone_takes_the_default_subnet(tmp_path: Path) -> None:
    plan = _plan(tmp_path, """
name: m6d
mgmt: {ipv4-subnet: 172.31.9.0/24}
topology:
  nodes:
    a: {kind: linux, mgmt-ipv6: "fd00:172:31::20"}
    b: {kind: linux}
""")
    assert str(plan.mgmt.subnet6) == "fd00:172:31::/64" and str(plan.mgmt.gateway6) == "fd00:172:31::1/64"
    assert str(plan.node("b").mgmt_ipv6) == "fd00:172:31::2/64"


def test_ipv6_routes_and_forwarding_with_ipv4_forwarding(tmp_path: Path) -> None:
    plan = _plan(tmp_path, """
name: rt6
topology:
  nodes:
    r: {kind: linux, sysctls: {net.ipv4.ip_forward: 1}}
    h:
      kind: linux
      routes:
        - {dst: default, via: "fd00:1::1"}
        - {dst: "fd00:5::/64", via: "fe80::1", dev: eth1}
        - {dst: 10.5.0.0/16, via: 10.0.0.1}
  links:
    - endpoints: ["r:eth1", "h:eth1"]
      ipv4: [10.0.0.1/24, 10.0.0.2/24]
      ipv6: ["fd00:1::1/64", "fd00:1::2/64"]
""")
    assert (IPV6_FORWARDING, "1") in plan.node("r").sysctls
    assert not any(key == IPV6_FORWARDING for key, _ in plan.node("h").sysctls)
    assert [(r.dst, r.via, r.dev) for r in plan.node("h").routes] == [
        ("default", "fd00:1::1", None), ("fd00:5::/64", "fe80::1", "eth1"), ("10.5.0.0/16", "10.0.0.1", None)]


def test_a_node_saying_otherwise_keeps_its_ipv6_forwarding(tmp_path: Path) -> None:
    plan = _plan(tmp_path, """
name: nofwd6
topology:
  nodes:
    r: {kind: linux, sysctls: {net.ipv4.ip_forward: 1, net.ipv6.conf.all.forwarding: 0}}
    h: {kind: linux}
  links:
    - endpoints: ["r:eth1", "h:eth1"]
      ipv6: ["fd00:1::1/64", "fd00:1::2/64"]
""")
    assert dict(plan.node("r").sysctls)[IPV6_FORWARDING] == "0"


def test_hosts_file_names_every_node_in_both_families() -> None:
    plan = load_plan(ROOT / "tests" / "integration" / "dualstack-hosts.yaml")
    lines = _hosts_file(plan).splitlines()
    assert lines[:2] == ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    assert "172.31.96.3\th1" in lines and "fd00:172:31:96::11\th1" in lines
    v6only = load_plan(ROOT / "topologies" / "routers-v6.yaml")
    assert "fd00:6:2::10\th2" in _hosts_file(v6only).splitlines()


def test_containerlab_ipv6_keys_are_no_longer_noted_as_without_effect() -> None:
    plan = load_plan(ROOT / "tests" / "topologies" / "clab" / "ipv6.clab.yml")
    assert not any("ipv6" in note.lower() for note in plan.notes)
    data = yaml.safe_load((ROOT / "tests" / "topologies" / "clab" / "ipv6.clab.yml").read_text())
    assert data["mgmt"]["ipv6-subnet"] == str(plan.mgmt.subnet6)


def test_a_cluster_with_ipv6_gives_the_mgmt_network_ipv6_by_default(tmp_path: Path) -> None:
    plan = _plan(tmp_path, """
name: kds
cluster:
  pod-cidr: 10.244.0.0/16,fd00:10:244::/56
  service-cidr: 10.96.0.0/16,fd00:10:96::/112
topology:
  nodes:
    cp: {kind: k8s-node}
    w1: {kind: k8s-node}
""")
    assert str(plan.mgmt.subnet6) == "fd00:172:31::/64"
    assert [n.node_ips((4, 6)) for n in plan.nodes] == [("172.31.0.2", "fd00:172:31::2"),
                                                        ("172.31.0.3", "fd00:172:31::3")]
    assert all((IPV6_FORWARDING, "1") in n.sysctls for n in plan.nodes)  # k8s-nodes forward IPv4: IPv6 too
    single = _plan(tmp_path, "name: k4\ncluster: {}\ntopology: {nodes: {cp: {kind: k8s-node}}}\n")
    assert single.mgmt.subnet6 is None and single.nodes[0].mgmt_ipv6 is None
