"""LoadBalancer Services, MetalLB's model: pools, allocation, election order, checks at validate, the rules."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
from pathlib import Path

import pytest

from labkit.errors import InputError
from labkit.k8s import parse_manifests
from labkit.k8s.allocate import allocate
from labkit.k8s.metallb import check_config, l2_order, parse_addresses
from labkit.lb import speaker
from labkit.proxy import build_service_view, render_node_ruleset
from labkit.proxy.views import Endpoint, ServicePortView, ServiceView
from labkit.topology import load_plan

NODES = ["cp", "w1", "w2"]


def pool(name: str, *addresses: str, extra: str = "", labels: str = "") -> str:
    return (f"apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: {name}, namespace: metallb-system"
            f"{', labels: ' + labels if labels else ''}}}\nspec:\n  addresses: [{', '.join(addresses)}]\n{extra}---\n")


L2 = "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l2, namespace: metallb-system}\n---\n"


def lb(name: str, *, annotations: str = "", spec: str = "", namespace: str = "default", port: int = 80,
       labels: str = "") -> str:
    meta = f"name: {name}, namespace: {namespace}"
    if annotations:
        meta += f", annotations: {{{annotations}}}"
    if labels:
        meta += f", labels: {labels}"
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{{meta}}}\nspec:\n  type: LoadBalancer\n"
            f"  selector: {{app: web}}\n  ports: [{{port: {port}}}]\n{spec}---\n")


def lbs(text: str):
    return allocate(parse_manifests(text, "m.yaml"), NODES, service_cidr="10.96.0.0/16").load_balancers


def errors(text: str) -> str:
    with pytest.raises(InputError) as exc:
        lbs(text)
    return str(exc.value)


# ---------------------------------------------------------------- pools


def test_pool_addresses_are_ranges_and_cidrs() -> None:
    assert parse_addresses("192.168.1.10-192.168.1.20") == (ipaddress.IPv4Address("192.168.1.10"),
                                                            ipaddress.IPv4Address("192.168.1.20"))
    assert parse_addresses("10.0.0.0/30")[1] == ipaddress.IPv4Address("10.0.0.3")
    for bad in ("10.0.0.5-10.0.0.1", "10.0.0.1/24", "nope", "fd00::5-fd00::1", "fd00::1/64", "10.0.0.1-fd00::1"):
        with pytest.raises(ValueError, match=r"valid: a CIDR \(192.168.10.0/24, fd00:10::/120\) or a range"):
            parse_addresses(bad)


def test_ipv6_pool_addresses_are_ranges_and_cidrs_of_any_size() -> None:
    assert parse_addresses("fd00:10::10-fd00:10::20") == (ipaddress.IPv6Address("fd00:10::10"),
                                                          ipaddress.IPv6Address("fd00:10::20"))
    assert parse_addresses("fd00:10::/120")[1] == ipaddress.IPv6Address("fd00:10::ff")
    assert "different families" in str(pytest.raises(ValueError, parse_addresses, "10.0.0.1-fd00::1").value)
    w = parse_manifests(pool("p", "fd00:10::/64", "10.9.0.0/30"))  # a /64: MetalLB's usual IPv6 pool
    spec = w.ip_address_pools[0].spec
    assert spec.families == (6, 4) and spec.contains(ipaddress.ip_address("fd00:10::ffff"))
    assert not spec.contains(ipaddress.ip_address("10.9.0.9")) and not spec.contains(ipaddress.ip_address("fd00::1"))
    first = spec.hosts(6)
    assert [str(next(first)), str(next(first))] == ["fd00:10::", "fd00:10::1"]  # lazily, in order
    assert [str(ip) for ip in spec.hosts(4)] == ["10.9.0.0", "10.9.0.1", "10.9.0.2", "10.9.0.3"]


def test_a_cidr_pool_hands_out_every_address_avoid_buggy_ips_skips_0_and_255() -> None:
    found = lbs(pool("p", "10.9.0.0/24") + L2 + lb("a"))
    assert found[("default", "a")].ip == "10.9.0.0"  # MetalLB gives the network address too
    found = lbs(pool("p", "10.9.0.255-10.9.1.1", extra="  avoidBuggyIPs: true\n") + L2 + lb("a") + lb("b"))
    assert [found[("default", n)].ip for n in "ab"] == ["10.9.1.1", None]
    assert found[("default", "b")].pending == "no available IPs in pool p"


def test_bad_pool_addresses_name_the_field() -> None:
    with pytest.raises(InputError) as exc:
        parse_manifests(pool("p", "10.0.0.9-10.0.0.1"), "m.yaml")
    assert "m.yaml:5: spec.addresses[0]: '10.0.0.9-10.0.0.1' is not valid" in str(exc.value)


# ---------------------------------------------------------------- allocation


def test_requested_addresses_are_honoured_both_ways() -> None:
    found = lbs(pool("p", "10.9.0.10-10.9.0.12") + L2
                + lb("a", annotations="metallb.io/loadBalancerIPs: 10.9.0.12")
                + lb("b", spec="  loadBalancerIP: 10.9.0.11\n") + lb("c"))
    assert {k[1]: v.ip for k, v in found.items()} == {"a": "10.9.0.12", "b": "10.9.0.11", "c": "10.9.0.10"}
    assert found[("default", "a")].modes == ("l2",) and found[("default", "a")].l2_nodes == tuple(NODES)


def test_an_address_outside_every_pool_is_an_error_at_its_line() -> None:
    text = errors(pool("p", "10.9.0.10-10.9.0.12") + lb("a", annotations="metallb.io/loadBalancerIPs: 10.9.9.9"))
    assert "m.yaml:9: metadata.annotations.metallb.io/loadBalancerIPs: 10.9.9.9 is in no IPAddressPool " \
           "(p: 10.9.0.10-10.9.0.12)" in text


def test_a_taken_address_is_an_error_unless_shared() -> None:
    twice = pool("p", "10.9.0.10/31") + lb("a", spec="  loadBalancerIP: 10.9.0.10\n") \
        + lb("b", spec="  loadBalancerIP: 10.9.0.10\n", port=81)
    assert "10.9.0.10 is already given to service default/a" in errors(twice)
    share = "metallb.io/allow-shared-ip: k, "
    shared = pool("p", "10.9.0.10/31") + lb("a", annotations=share + "metallb.io/loadBalancerIPs: 10.9.0.10") \
        + lb("b", annotations=share + "metallb.io/loadBalancerIPs: 10.9.0.10", port=81) \
        + lb("c", annotations="metallb.io/allow-shared-ip: k", port=82)
    found = lbs(shared)
    assert {found[("default", n)].ip for n in "abc"} == {"10.9.0.10"}  # c joins its sharing key's address
    clash = pool("p", "10.9.0.10/31") + lb("a", annotations=share + "metallb.io/loadBalancerIPs: 10.9.0.10") \
        + lb("b", annotations=share + "metallb.io/loadBalancerIPs: 10.9.0.10")
    assert "already given to service default/a" in errors(clash)  # same port: no sharing


def test_pool_choice_priority_auto_assign_and_service_allocation() -> None:
    text = (pool("low", "10.1.0.1/32", extra="  serviceAllocation: {priority: 50}\n")
            + pool("high", "10.2.0.1/32", extra="  serviceAllocation: {priority: 10, namespaces: [prod]}\n")
            + pool("manual", "10.3.0.1/32", extra="  autoAssign: false\n")
            + pool("any", "10.4.0.0/30")
            + lb("a", namespace="prod") + lb("b") + lb("c", annotations="metallb.io/address-pool: manual") + lb("d"))
    found = lbs(text)
    assert found[("prod", "a")].pool == "high"  # priority 10 first, and it serves namespace prod
    assert found[("default", "b")].pool == "low"  # high serves prod only
    assert found[("default", "c")].pool == "manual"  # only by name
    assert found[("default", "d")].pool == "any"  # low is full: the next pool, pools without priority last
    assert "no IPAddressPool 'gone'" in errors(pool("p", "10.1.0.1/32")
                                               + lb("x", annotations="metallb.io/address-pool: gone"))


def test_pending_without_pool_or_for_another_class() -> None:
    found = lbs(lb("a") + pool("p", "10.1.0.0/30") + lb("b", spec="  loadBalancerClass: example.com/other\n"))
    assert found[("default", "a")].ip is not None and found[("default", "a")].pending and "not announced" in \
        found[("default", "a")].pending  # no advertisement: given an address, announced by nobody
    assert found[("default", "b")].ip is None and "not MetalLB's" in found[("default", "b")].pending
    assert lbs(lb("c"))[("default", "c")].pending.startswith("no IPAddressPool may serve it")


def test_node_ports_unless_allocate_load_balancer_node_ports_is_false() -> None:
    w = parse_manifests(pool("p", "10.1.0.0/30") + lb("a") + lb("b", spec="  allocateLoadBalancerNodePorts: false\n"))
    ports = allocate(w, NODES, service_cidr="10.96.0.0/16").node_ports
    assert ("default", "a", 0) in ports and ("default", "b", 0) not in ports


# ---------------------------------------------------------------- families


def dual_lbs(text: str, families=None, policies=None):
    from labkit.k8s.metallb import allocate_load_balancers

    return allocate_load_balancers(parse_manifests(text, "m.yaml"), {n: {} for n in NODES},
                                   cluster_families=(4, 6), families=families, policies=policies)


def test_a_dual_stack_service_gets_one_address_of_each_family_from_one_pool() -> None:
    text = pool("v4only", "10.9.0.10/32") + pool("both", "10.8.0.0/30", "fd00:8::/124") + L2 + lb("a") + lb("b")
    found = dual_lbs(text, families={("default", "a"): (6, 4), ("default", "b"): (4,)})
    a = found[("default", "a")]
    assert (a.pool, a.ips, a.ip) == ("both", ("fd00:8::", "10.8.0.0"), "fd00:8::")  # primary family first
    assert a.as_status()["ips"] == ["fd00:8::", "10.8.0.0"]
    b = found[("default", "b")]
    assert (b.pool, b.ips) == ("both", ("10.8.0.1",))  # pools without priority: by name; single stack, IPv4


def test_single_stack_services_get_their_family_and_policies_decide_the_rest() -> None:
    text = (pool("v6", "fd00:6::/120") + pool("v4", "10.4.0.0/30") + L2 + lb("req") + lb("single")
            + lb("prefer") + lb("six"))
    key = lambda name: ("default", name)  # noqa: E731
    found = dual_lbs(text, families={key("req"): (4, 6), key("prefer"): (6, 4), key("six"): (6,)},
                     policies={key("req"): "RequireDualStack", key("prefer"): "PreferDualStack"})
    assert found[key("single")].ips == ("10.4.0.0",)  # named by neither: the cluster's preferred family
    assert found[key("six")].ips == ("fd00:6::1",)
    # no pool holds both families: RequireDualStack stays pending, PreferDualStack gets its primary family
    assert found[key("req")].ip is None
    assert found[key("req")].pending == "no available IPs in pool v4, v6 for IPv4 and IPv6"
    assert found[key("prefer")].ips == ("fd00:6::",)


def test_a_dual_stack_cluster_gives_each_service_the_families_its_cluster_ips_have(tmp_path: Path) -> None:
    services = (lb("req", spec="  ipFamilyPolicy: RequireDualStack\n")
                + lb("prefer", spec="  ipFamilyPolicy: PreferDualStack\n  ipFamilies: [IPv6, IPv4]\n")
                + lb("single") + lb("six", spec="  ipFamilies: [IPv6]\n",
                                     annotations="metallb.io/loadBalancerIPs: 'fd00:8::9'"))
    (tmp_path / "apps.yaml").write_text(pool("both", "10.8.0.0/30", "fd00:8::/124") + L2 + services)
    (tmp_path / "t.yaml").write_text("name: lbds\ncluster:\n  pod-cidr: 10.244.0.0/16,fd00:10:244::/56\n"
                                     "  service-cidr: 10.96.0.0/16,fd00:10:96::/112\ntopology:\n  nodes:\n"
                                     "    n1: {kind: k8s-node}\nworkloads: [apps.yaml]\n")
    found = {k[1]: v.ips for k, v in load_plan(tmp_path / "t.yaml").allocation.load_balancers.items()}
    # (namespace, name) order after the addresses asked for; each primary family first
    assert found == {"prefer": ("fd00:8::", "10.8.0.0"), "req": ("10.8.0.1", "fd00:8::1"), "single": ("10.8.0.2",),
                     "six": ("fd00:8::9",)}


def test_service_families_default_as_the_api_server_does() -> None:
    from types import SimpleNamespace

    from labkit.k8s.metallb import service_families

    def svc(policy=None, families=()):
        return SimpleNamespace(spec=SimpleNamespace(ipFamilyPolicy=policy, ipFamilies=families))

    assert service_families(svc(), (6, 4)) == (6,)
    assert service_families(svc(families=("IPv4",)), (6, 4)) == (4,)
    assert service_families(svc("PreferDualStack"), (6, 4)) == (6, 4)
    assert service_families(svc("PreferDualStack", ("IPv4",)), (6, 4)) == (4, 6)
    assert service_families(svc("PreferDualStack"), (4,)) == (4,)  # a single-stack cluster: one family
    assert service_families(svc("RequireDualStack", ("IPv6", "IPv4")), (4, 6)) == (6, 4)


def test_requested_addresses_of_both_families() -> None:
    both = {("default", "a"): (4, 6)}
    text = pool("both", "10.8.0.0/30", "fd00:8::/124") + L2 + lb("a", annotations=(
        "metallb.io/loadBalancerIPs: 'fd00:8::5,10.8.0.2'"))
    assert dual_lbs(text, both)[("default", "a")].ips == ("10.8.0.2", "fd00:8::5")  # the Service's family order
    wrong = pool("both", "10.8.0.0/30", "fd00:8::/124") + lb("a", annotations="metallb.io/loadBalancerIPs: fd00:8::5")
    with pytest.raises(InputError) as exc:
        dual_lbs(wrong)
    assert "fd00:8::5 is IPv6, the Service's ipFamilies are IPv4; valid: an address of each of its families" \
        in str(exc.value)
    twice = pool("both", "10.8.0.0/30", "fd00:8::/124") + lb("a", annotations=(
        "metallb.io/loadBalancerIPs: 'fd00:8::5,fd00:8::6'"))
    with pytest.raises(InputError, match="valid: one address per family"):
        dual_lbs(twice, both)
    apart = pool("p4", "10.8.0.0/30") + pool("p6", "fd00:8::/124") + lb("a", annotations=(
        "metallb.io/loadBalancerIPs: '10.8.0.1,fd00:8::5'"))
    with pytest.raises(InputError, match="10.8.0.1,fd00:8::5 is not all in one IPAddressPool"):
        dual_lbs(apart, both)


def test_an_ipv4_cluster_refuses_an_ipv6_address_asked_for() -> None:
    """allocate() passes each Service's families as its clusterIPs have them: on an IPv4-only cluster an
    IPv6 address in loadBalancerIPs is a mistake MetalLB refuses too, named with its line."""
    text = pool("both", "10.8.0.0/30", "fd00:8::/124") + L2 + lb("a", annotations=(
        "metallb.io/loadBalancerIPs: '10.8.0.2,fd00:8::5'")) + lb("b", annotations=(
        "metallb.io/loadBalancerIPs: 'fd00:8::6'"))
    found = errors(text)
    assert "10.8.0.2,fd00:8::5 is IPv4 and IPv6, the Service's ipFamilies are IPv4" in found
    assert "fd00:8::6 is IPv6, the Service's ipFamilies are IPv4" in found


def test_ipv6_pools_may_not_overlap_each_other_or_the_cluster_networks_of_their_family() -> None:
    w = parse_manifests(pool("a", "fd00:9::/120") + pool("b", "fd00:9::80-fd00:9::90")
                        + pool("c", "fd00:10:244:3::/124") + pool("d", "10.9.0.0/24"), "m.yaml")
    found = "\n".join(map(str, check_config(w, pod_cidr="10.244.0.0/16,fd00:10:244::/56",
                                            service_cidr=("10.96.0.0/16", "fd00:10:96::/112"))))
    assert "fd00:9::80-fd00:9::90 overlaps fd00:9::/120 of IPAddressPool metallb-system/a" in found
    assert "fd00:10:244:3::/124 overlaps the cluster's pod-cidr fd00:10:244::/56" in found
    assert "10.9.0.0/24" not in found  # the other family is never compared
    lab = check_config(w, pod_cidr="10.244.0.0/16", service_cidr="10.96.0.0/16",
                       lab_addresses={"fd00:9::85": "the address of ext:eth1"})
    assert any("holds fd00:9::85, the address of ext:eth1" in str(p) for p in lab)


# ---------------------------------------------------------------- election


def test_l2_order_is_metallbs_sha256_of_node_and_ip() -> None:
    ip = "172.31.0.240"
    expected = sorted(NODES, key=lambda n: hashlib.sha256(f"{n}#{ip}".encode()).hexdigest())
    assert l2_order(NODES, ip) == expected
    assert l2_order(list(reversed(NODES)), ip) == expected  # the order of the nodes given does not matter


def test_the_first_running_candidate_answers() -> None:
    assert speaker.owner(["w2", "w1", "cp"], {"cp", "w1", "w2"}) == "w2"
    assert speaker.owner(["w2", "w1", "cp"], {"cp", "w1"}) == "w1"
    assert speaker.owner(["w2"], {"cp"}) is None


def test_neighbor_advertisements_are_well_formed() -> None:
    """Checksum, hop limit and the target link-layer address option, as a receiver validates them."""
    mac_ = bytes.fromhex("020000000001")
    target = socket.inet_pton(socket.AF_INET6, "fd00:99::240")
    client = socket.inet_pton(socket.AF_INET6, "fd00:99::1")
    frame = speaker.neighbor_advertisement(mac_, bytes.fromhex("020000000002"), target, client,
                                           speaker.NA_SOLICITED | speaker.NA_OVERRIDE)
    ipv6, icmp = frame[14:54], frame[54:]
    assert frame[12:14] == b"\x86\xdd" and ipv6[6] == 58 and ipv6[7] == 255 and ipv6[8:24] == target
    assert icmp[0] == speaker.NA and icmp[4] == 0x60 and icmp[8:24] == target and icmp[24:32] == b"\x02\x01" + mac_
    pseudo = target + client + len(icmp).to_bytes(4, "big") + b"\x00\x00\x00\x3a"
    assert speaker._checksum(pseudo + icmp) == 0  # the checksum field makes the sum come out even
    assert speaker.solicited_node(target) == socket.inet_pton(socket.AF_INET6, "ff02::1:ff00:240")
    assert speaker.multicast_mac(speaker.ALL_NODES) == bytes.fromhex("333300000001")


def _solicitation(target: str, sender: str = "fd00:99::1", hop_limit: int = 255, sllao: bool = True) -> bytes:
    """A Neighbor Solicitation as a client sends it (to the target's solicited-node group)."""
    target_b, sender_b = (socket.inet_pton(socket.AF_INET6, a) for a in (target, sender))
    group = speaker.solicited_node(target_b)
    icmp = bytes([speaker.NS, 0, 0, 0]) + bytes(4) + target_b + (b"\x01\x01" + bytes.fromhex("02000000000a")
                                                                  if sllao else b"")
    ipv6 = (6 << 28).to_bytes(4, "big") + len(icmp).to_bytes(2, "big") + bytes([58, hop_limit]) + sender_b + group
    return speaker.multicast_mac(group) + bytes.fromhex("02000000000b") + b"\x86\xdd" + ipv6 + icmp


def test_solicitations_are_read_with_the_senders_link_layer_address() -> None:
    target = socket.inet_pton(socket.AF_INET6, "fd00:99::240")
    mac, sender, found = speaker.solicitation(_solicitation("fd00:99::240"))
    assert (mac, found, sender) == (bytes.fromhex("02000000000a"), target,
                                    socket.inet_pton(socket.AF_INET6, "fd00:99::1"))  # the option's MAC wins
    assert speaker.solicitation(_solicitation("fd00:99::240", sllao=False))[0] == bytes.fromhex("02000000000b")
    assert speaker.solicitation(_solicitation("fd00:99::240", hop_limit=64)) is None  # it crossed a router
    assert speaker.solicitation(_solicitation("fd00:99::240")[:70]) is None


def test_liveness_is_a_pid_file_with_its_start_time(tmp_path: Path) -> None:
    path = tmp_path / "n.pid"
    assert not speaker.alive(str(path))
    path.write_text(f"{os.getpid()} {speaker._start_time(os.getpid())}\n")
    assert speaker.alive(str(path))
    path.write_text(f"{os.getpid()} 1\n")  # another process that once had this pid
    assert not speaker.alive(str(path))


def test_local_candidates_are_nodes_with_endpoints_and_none_without_endpoints() -> None:
    text = (pool("p", "10.1.0.0/30") + L2 + lb("a", spec="  externalTrafficPolicy: Local\n") + lb("b")
            + "apiVersion: v1\nkind: Pod\nmetadata: {name: p1, labels: {app: web}}\nspec:\n  nodeName: w1\n"
              "  containers: [{name: c, image: x, command: [sleep, '1']}]\n")
    w = parse_manifests(text)
    allocation = allocate(w, NODES, service_cidr="10.96.0.0/16")
    views = {v.name: v for v in build_service_view(w, {"default/p1": "10.244.1.2"}, allocation=allocation,
                                                   pod_nodes={"default/p1": "w1"})}
    assert views["a"].load_balancer["l2_candidates"] == ["w1"]
    assert sorted(views["b"].load_balancer["l2_candidates"]) == NODES
    empty = {v.name: v for v in build_service_view(w, {}, allocation=allocation)}
    assert empty["b"].load_balancer["l2_candidates"] == []  # no ready endpoint: MetalLB announces nothing


# ---------------------------------------------------------------- checks at validate


def test_pools_may_not_overlap_each_other_or_the_cluster_networks() -> None:
    w = parse_manifests(pool("a", "10.9.0.0/24") + pool("b", "10.9.0.100-10.9.0.110") + pool("c", "10.244.3.0/28")
                        + pool("d", "10.96.5.5/32"), "m.yaml")
    found = "\n".join(map(str, check_config(w, pod_cidr="10.244.0.0/16", service_cidr="10.96.0.0/16")))
    assert "m.yaml:11: spec.addresses[0]: 10.9.0.100-10.9.0.110 overlaps 10.9.0.0/24 of IPAddressPool " \
           "metallb-system/a" in found
    assert "10.244.3.0/28 overlaps the cluster's pod-cidr 10.244.0.0/16" in found
    assert "10.96.5.5/32 overlaps the cluster's service-cidr 10.96.0.0/16" in found


def test_advertisements_and_peers_must_name_what_exists() -> None:
    bgp = ("apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: b, namespace: metallb-system}\n"
           "spec: {ipAddressPools: [nope], peers: [tor]}\n---\n"
           "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: tor, namespace: metallb-system}\n"
           "spec: {myASN: 64512, peerASN: 65001, peerAddress: 172.31.0.5}\n")
    w = parse_manifests(pool("p", "10.1.0.0/30") + bgp, "m.yaml")
    found = "\n".join(map(str, check_config(w, pod_cidr="10.244.0.0/16", service_cidr="10.96.0.0/16",
                                            bgp_peers=[("172.31.0.5", 65000)], bgp_asn=64512)))
    assert "spec.ipAddressPools[0]: no IPAddressPool 'nope'; valid: p" in found
    assert "spec.peerAddress: 172.31.0.5 AS 65001 is not one of cluster.cni.bgp.peers (172.31.0.5 AS 65000)" in found
    without = "\n".join(map(str, check_config(w, pod_cidr="10.244.0.0/16", service_cidr="10.96.0.0/16")))
    assert "set cluster.cni.backend: bgp" in without


def test_validate_reports_a_bad_request_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "apps.yaml").write_text(pool("p", "192.168.9.10-192.168.9.20")
                                        + lb("a", spec="  loadBalancerIP: 192.168.9.99\n"))
    (tmp_path / "t.yaml").write_text("name: lbbad\ncluster: {}\ntopology:\n  nodes:\n    n1: {kind: k8s-node}\n"
                                     "workloads: [apps.yaml]\n")
    with pytest.raises(InputError) as exc:
        load_plan(tmp_path / "t.yaml")
    assert "apps.yaml:14: spec.loadBalancerIP: 192.168.9.99 is in no IPAddressPool" in str(exc.value)


def test_the_shipped_lab_allocates_as_its_comments_say() -> None:
    plan = load_plan(Path(__file__).parents[2] / "topologies" / "kube-lb.yaml")
    found = {k[1]: v for k, v in plan.allocation.load_balancers.items()}
    assert found["web-l2"].ip == "172.31.0.240" and found["guarded"].ip == "172.31.0.241"
    assert (found["solo-bgp"].ip, found["web-bgp"].ip) == ("198.51.100.1", "198.51.100.2")
    assert found["web-bgp"].modes == ("bgp",) and found["web-l2"].interfaces == ("eth0",)
    assert found["tiny-a"].ip == "172.31.0.250" and found["tiny-b"].pending == "no available IPs in pool tiny"


# ---------------------------------------------------------------- data plane


def _lb_view(**kw) -> ServiceView:
    endpoints = (Endpoint(ip="10.244.1.2", port=8080, pod="default/p1", node="w1"),)
    return ServiceView(namespace="default", name="web", type="LoadBalancer", cluster_ip="10.96.0.20",
                       ports=(ServicePortView(name="http", protocol="TCP", port=80, target_port=8080,
                                              node_port=kw.pop("node_port", 30080), endpoints=kw.pop("endpoints",
                                                                                                     endpoints)),),
                       load_balancer={"ip": "172.31.0.240"}, **kw)


def test_lb_addresses_and_external_ips_are_in_the_service_map() -> None:
    text = render_node_ruleset([_lb_view(external_ips=("203.0.113.10",), node_port=None)], pod_cidr="10.244.0.0/16")
    assert "172.31.0.240 . tcp . 80 : goto external-" in text
    assert "203.0.113.10 . tcp . 80 : goto external-" in text
    assert "external address of service default/web:80/tcp" in text
    assert "service-nodeports {" in text and "tcp . None" not in text


def test_source_ranges_put_a_firewall_chain_in_front() -> None:
    text = render_node_ruleset([_lb_view(source_ranges=("172.31.0.6/32",))], pod_cidr="10.244.0.0/16")
    assert "172.31.0.240 . tcp . 80 : goto firewall-" in text
    assert "ip saddr { 172.31.0.6/32 } goto external-" in text
    assert 'drop comment "loadBalancerSourceRanges of service default/web: source not allowed"' in text


def test_local_policy_and_no_endpoints_for_lb_addresses() -> None:
    local = render_node_ruleset([_lb_view(external_traffic_policy="Local")], pod_cidr="10.244.0.0/16",
                                node_name="w2")
    assert "no local endpoints (externalTrafficPolicy: Local)" in local
    empty = render_node_ruleset([_lb_view(endpoints=())], pod_cidr="10.244.0.0/16")
    assert "172.31.0.240 . tcp . 80 : goto reject-chain" in empty


def test_a_pool_may_not_hold_the_labs_own_addresses(tmp_path: Path) -> None:
    (tmp_path / "apps.yaml").write_text(pool("p", "172.31.0.2-172.31.0.9"))
    (tmp_path / "t.yaml").write_text("name: lbbad\nmgmt: {ipv4-subnet: 172.31.0.0/24}\ncluster: {}\ntopology:\n"
                                     "  nodes:\n    n1: {kind: k8s-node}\nworkloads: [apps.yaml]\n")
    with pytest.raises(InputError) as exc:
        load_plan(tmp_path / "t.yaml")
    assert "apps.yaml:5: spec.addresses: holds 172.31.0.2, the address of n1:eth0; a speaker would answer for it" \
        in str(exc.value)
