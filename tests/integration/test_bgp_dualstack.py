"""Backend bgp and MetalLB over both families (tests/integration/kube-bgp-dualstack.yaml): an IPv4 and
an IPv6 session per peer (Calico's way), every node's IPv6 podCIDR learned from BIRD by every other node
and the ToR, pods on different nodes reaching each other over IPv6 unNATed, a dual-stack LoadBalancer
answered over NDP by one node's speaker for a client on the node network, and a dual-stack BGP one held
as ECMP /32 and /128 routes by the ToR.

One lab for the module, on the netns runtime: the docker runtime changes where the nodes live, not what
BGP or the speakers do, and test_bgp.py/test_load_balancer.py run both runtimes over IPv4.
"""

from __future__ import annotations

import ipaddress
import json

from labkit import lab
from labkit.pytest_plugin import RunningLab, labkit_fixture

from .conftest import ROOT

DUAL_STACK = ROOT / "tests" / "integration" / "kube-bgp-dualstack.yaml"
K8S_NODES = ("cp", "w1", "w2")
POD_CIDRS6 = {"cp": "fd00:10:244::/64", "w1": "fd00:10:244:1::/64", "w2": "fd00:10:244:2::/64"}
NODE_IPS6 = {"cp": "fd00:172:31::2", "w1": "fd00:172:31::3", "w2": "fd00:172:31::4"}
L2_IPS = ("172.31.0.240", "fd00:172:31::240")  # web-l2: RequireDualStack, IPv4 primary
BGP_IPS = ("fd00:198:51:100::1", "198.51.100.1")  # web-bgp: PreferDualStack, IPv6 primary

kube_bgp6 = labkit_fixture(DUAL_STACK, runtime="netns", scope="module")


def _routes6(running: RunningLab, node: str) -> dict[str, str]:
    """The node's IPv6 kernel routes: destination -> the rest of the `ip -6 route` line (multipath joined)."""
    found: dict[str, str] = {}
    last = None
    for line in running.exec(node, "ip", "-6", "route", check=True).stdout.splitlines():
        if line.startswith((" ", "\t")) and last is not None:
            found[last] += " " + line.strip()
            continue
        words = line.split()
        last = words[1] if words[0] in ("blackhole", "unreachable") else words[0]
        found[last] = line
    return found


def _ask(running: RunningLab, source: str, host: str, port: int) -> list[str]:
    """The echo pod's answer over TCP: its name and the client address it sees (socat's `[x:x:...]` form
    read back to the address's short form)."""
    target = f"TCP6:[{host}]:{port}" if ":" in host else f"TCP:{host}:{port}"
    name, peer = running.exec(source, "socat", "-T3", "-", target, check=True).stdout.split()
    return [name, str(ipaddress.ip_address(peer.strip("[]")))]


def _lb(running: RunningLab, service: str) -> dict:
    found = {f"{s['namespace']}/{s['name']}": s for s in lab.status(running.name)[0]["services"]}
    return found[service]["load_balancer"]


def test_ipv6_pod_routes_between_nodes_come_from_bird(kube_bgp6: RunningLab) -> None:
    for node in K8S_NODES:
        routes = _routes6(kube_bgp6, node)
        for other in K8S_NODES:
            line = routes[POD_CIDRS6[other]]
            if other == node:  # its own block: a blackhole, as for IPv4
                assert line.startswith("blackhole") and "proto bird" in line, line
            else:
                assert f"via {NODE_IPS6[other]} dev eth0 proto bird" in line, line
        assert "proto bird" in routes["fd00:50::/64"]  # the outside network, announced by the ToR over IPv6
    tor = _routes6(kube_bgp6, "tor")
    for node, cidr in POD_CIDRS6.items():
        assert f"via {NODE_IPS6[node]} dev eth0 proto bird" in tor[cidr]


def test_pods_on_different_nodes_reach_each_other_over_ipv6_by_their_own_addresses(kube_bgp6: RunningLab) -> None:
    pods = kube_bgp6.pods()
    client = pods["default/client"]
    echo = next(p for name, p in pods.items() if name.startswith("default/echo-") and p["node"] == "w1")
    client6, echo6 = (next(ip for ip in p["ips"] if ":" in ip) for p in (client, echo))
    assert _ask(kube_bgp6, "default/client", echo6, 8080) == [echo["name"], client6]  # no NAT
    # and from outside, through the ToR: its route to w1's block came from BGP
    assert _ask(kube_bgp6, "ext", echo6, 8080) == [echo["name"], "fd00:50::2"]


def test_status_has_a_session_per_family_and_routes_of_both(kube_bgp6: RunningLab) -> None:
    nodes = {n["name"]: n for n in lab.status(kube_bgp6.name)[0]["nodes"]}
    w1 = nodes["w1"]["bgp"]
    assert w1["families"] == [4, 6]
    assert [(s["name"], s["address"], s["family"], s["state"]) for s in w1["sessions"]] == [
        ("node_cp", "172.31.0.2", 4, "Established"), ("node_cp_v6", "fd00:172:31::2", 6, "Established"),
        ("node_w2", "172.31.0.4", 4, "Established"), ("node_w2_v6", "fd00:172:31::4", 6, "Established"),
        ("peer_tor", "172.31.0.5", 4, "Established"), ("peer_tor_v6", "fd00:172:31::5", 6, "Established")]
    learned = {r["prefix"]: r for r in w1["routes"] if r["primary"]}
    assert learned["fd00:10:244:2::/64"]["via"] == [NODE_IPS6["w2"]]
    assert (learned["fd00:10:244:2::/64"]["protocol"], learned["fd00:10:244:2::/64"]["table"]) == ("node_w2_v6",
                                                                                                 "master6")
    assert learned["10.244.2.0/24"]["family"] == 4 and learned["fd00:10:244:1::/64"]["type"] == "blackhole"


def test_a_dual_stack_l2_address_is_answered_over_ndp_by_the_elected_node(kube_bgp6: RunningLab) -> None:
    found = _lb(kube_bgp6, "default/web-l2")
    assert (found["ip"], found["ips"], found["mode"]) == (L2_IPS[0], list(L2_IPS), "l2")
    node = found["announcing_node"]
    assert node == found["l2_candidates"][0]  # one election (by the first address) for both families
    for ip in L2_IPS:
        assert _ask(kube_bgp6, "ext", ip, 80)[0].startswith("echo-")
    neigh = json.loads(kube_bgp6.exec("ext", "ip", "-6", "-j", "neigh", "show", L2_IPS[1], check=True).stdout)
    mac = json.loads(kube_bgp6.exec(node, "ip", "-j", "link", "show", "eth0", check=True).stdout)[0]["address"]
    assert neigh and neigh[0]["lladdr"] == mac  # the speaker's Neighbor Advertisement, the node's MAC


def test_a_dual_stack_bgp_address_is_an_ecmp_route_of_each_family_on_the_tor(kube_bgp6: RunningLab) -> None:
    found = _lb(kube_bgp6, "default/web-bgp")
    assert (found["ip"], found["ips"], found["mode"]) == (BGP_IPS[0], list(BGP_IPS), "bgp")
    v6 = kube_bgp6.exec("tor", "ip", "-6", "route", "show", BGP_IPS[0], check=True).stdout
    v4 = kube_bgp6.exec("tor", "ip", "route", "show", BGP_IPS[1], check=True).stdout
    for node, ip6 in NODE_IPS6.items():
        assert f"nexthop via {ip6} dev eth0" in v6, v6
        assert f"nexthop via 172.31.0.{2 + K8S_NODES.index(node)} dev eth0" in v4, v4
    for ip in BGP_IPS:
        assert _ask(kube_bgp6, "ext", ip, 80)[0].startswith("echo-")  # through the ToR (ext's route via eth1)
