"""The plan of `cluster.cni.bgp` (backend bgp): who sessions with whom, checked before anything exists.

Calico's model: every k8s-node runs a BGP speaker in one AS (`asn`), meshed over
iBGP (`mesh`), or clients of a few nodes that reflect routes for the others
(`route-reflectors`); every node also sessions with each external peer (`peers`)
over its node IP. A peer is a router the user runs (`address`) or a `linux` node
of the lab (`node`) whose BIRD labkit runs too (a ToR for the lab). All sessions
are single-hop over the node (mgmt) network.

Address families, as Calico runs a dual-stack cluster: one session per family
between the two ends' addresses of that family (IPv4 sessions between the node
IPv4 addresses carry IPv4 routes, IPv6 sessions between the node IPv6 addresses
carry IPv6 routes), not IPv6 routes over an IPv4 session. A peer `address` is of
one family and its sessions carry that family; a peer `node` gets a session per
family it and the nodes have an address of (labkit.bgp.speakers).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

DEFAULT_ASN = 64512
AS_TRANS = 23456  # RFC 6793: stands in for 4-byte ASNs in old speakers; no AS of its own


@dataclass(frozen=True)
class BgpPeerPlan:
    address: ipaddress.IPv4Address | ipaddress.IPv6Address  # the peer's address on the node network
    asn: int
    node: str | None = None  # a linux node of the lab: labkit runs its BIRD


@dataclass(frozen=True)
class BgpPlan:
    asn: int = DEFAULT_ASN
    mesh: bool = True
    route_reflectors: tuple[str, ...] = ()
    peers: tuple[BgpPeerPlan, ...] = ()

    def is_reflector(self, node: str) -> bool:
        return node in self.route_reflectors

    @property
    def router_nodes(self) -> tuple[BgpPeerPlan, ...]:
        """Peers that are nodes of the lab (labkit runs their BIRD)."""
        return tuple(p for p in self.peers if p.node is not None)


def plan_bgp(d: Any) -> BgpPlan | None:  # d: labkit.topology.plan.Draft (which imports this module)
    """`cluster.cni.bgp` checked against the nodes and the mgmt network; None unless the backend is bgp.

    Runs after the mgmt pass (peers are checked against node addresses). Problems go to `d`."""
    c = d.topo.cluster
    if c is None:
        return None
    base = ("cluster", "cni", "bgp")
    settings = c.cni.bgp
    if c.cni.backend != "bgp":
        if settings is not None:
            d.add(base, f"bgp settings apply to backend bgp only (this cluster's backend is {c.cni.backend}); "
                        "set cluster.cni.backend: bgp or remove cluster.cni.bgp")
        return None
    if settings is None:
        return BgpPlan()
    ok = True
    for asn, path in [(settings.asn, base + ("asn",))] + [(p.asn, base + ("peers", i, "asn"))
                                                          for i, p in enumerate(settings.peers)]:
        if asn == AS_TRANS:
            d.add(path, f"ASN {AS_TRANS} is AS_TRANS (RFC 6793), no AS of its own; "
                        "use a private ASN: 64512-65534 or 4200000000-4294967294")
            ok = False
    cluster_nodes = [n for n in d.settings if (k := d.kind_of(n)) is not None and k.cluster_node]
    seen: set[str] = set()
    for i, name in enumerate(settings.route_reflectors):
        path = base + ("route-reflectors", i)
        if name not in d.settings:
            d.add(path, f"unknown node {name!r}; route reflectors are k8s-nodes: {', '.join(cluster_nodes)}")
            ok = False
        elif name not in cluster_nodes:
            d.add(path, f"node {name!r} is not a k8s-node; route reflectors are k8s-nodes: "
                        f"{', '.join(cluster_nodes)}")
            ok = False
        elif name in seen:
            d.add(path, f"node {name!r} is named twice; name each route reflector once")
            ok = False
        seen.add(name)
    mesh = settings.mesh
    if settings.route_reflectors and mesh:
        d.add(base + ("mesh",), "route reflectors replace the full mesh: remove mesh: true, or the route-reflectors")
        ok = False
    if mesh is False and not settings.route_reflectors:
        d.add(base + ("mesh",), "with mesh: false the nodes would learn no pod routes from each other; "
                                "name route-reflectors (e.g. route-reflectors: [cp]), or keep the mesh")
        ok = False
    peers = []
    node_ips = {str(ip.ip): n for n, ip in d.mgmt_ips.items()}
    node_ips.update({str(ip.ip): n for n, ip in getattr(d, "mgmt_ips6", {}).items()})
    addresses: dict[str, int] = {}
    for i, p in enumerate(settings.peers):
        path = base + ("peers", i)
        if p.node is not None:
            kind = d.kind_of(p.node)
            if p.node not in d.settings:
                linux = [n for n in d.settings if (k := d.kind_of(n)) is not None and not k.cluster_node
                         and not k.l2_bridge]
                d.add(path + ("node",), f"unknown node {p.node!r}; a peer node is a linux node of this lab: "
                                        f"{', '.join(linux) or 'none defined'}")
                ok = False
                continue
            if kind is None or kind.cluster_node or kind.l2_bridge or p.node not in d.mgmt_ips:
                d.add(path + ("node",), f"node {p.node!r} is a {d.settings[p.node].get('kind')}: a peer node is "
                                        "a linux node (a router) on the node network")
                ok = False
                continue
            address = d.mgmt_ips[p.node].ip
        else:
            assert p.address is not None
            address = p.address
            subnet = _node_network(d.mgmt, address.version)
            if d.mgmt is not None and subnet is None:
                d.add(path + ("address",), f"peer address {address} is IPv6 and the node network has no IPv6 "
                                           "subnet; set mgmt.ipv6-subnet (or give the cluster an IPv6 pod-cidr)")
                ok = False
                continue
            if subnet is not None and address not in subnet:
                d.add(path + ("address",), f"peer address {address} is outside the node network {subnet}; "
                                           "BGP sessions run single-hop over it: give an address inside it")
                ok = False
                continue
            if str(address) in node_ips:
                owner = node_ips[str(address)]
                d.add(path + ("address",), f"peer address {address} is the address of node {owner!r}; "
                                           f"for a lab node use {{node: {owner}, asn: N}}")
                ok = False
                continue
        if str(address) in addresses:
            d.add(path, f"peer {address} is already peers[{addresses[str(address)]}]; name each peer once")
            ok = False
            continue
        addresses[str(address)] = i
        peers.append(BgpPeerPlan(address, p.asn, p.node))
    if not ok:
        return None
    return BgpPlan(asn=settings.asn, mesh=not settings.route_reflectors, route_reflectors=tuple(
        settings.route_reflectors), peers=tuple(peers))


def _node_network(mgmt: Any, family: int) -> Any:
    """The node network's subnet of `family` (None: the lab has none of that family)."""
    if mgmt is None:
        return None
    return mgmt.subnet if family == 4 else mgmt.subnet6
