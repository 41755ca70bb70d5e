"""Who runs a BGP speaker in a lab, and with whom each one sessions: a pure function of the plan.

- every k8s-node: AS `cni.bgp.asn`, router id = its node IP, originates its podCIDR (installed in
  its own kernel as a blackhole, like Calico's IPAM block route);
- full mesh: an iBGP session to every other k8s-node;
- route reflectors: a reflector sessions with every other node (its clients: `rr client`, and
  with the other reflectors as ordinary iBGP peers) and passes on what it learns; a client
  sessions with the reflectors only;
- external peers: every k8s-node sessions with each over its node IP, announcing its own
  prefixes only; a peer that is a `linux` node of the lab runs a speaker too (role "router"):
  its AS, a session to every k8s-node, announcing its connected networks other than the
  node network (e.g. the outside network behind a ToR).

`Speaker.announce` is where other originated prefixes go (a LoadBalancer's /32 or /128,
MetalLB's BGP mode): announced, not installed in the node's own kernel.

Families (a dual-stack cluster), as Calico runs them: a session per family between the two
ends' addresses of that family, each carrying its own family's routes; an IPv6 session is
named like its IPv4 twin with `_v6` (`node_cp`, `node_cp_v6`). Every k8s-node originates its
podCIDR of each family. The router id stays the node's IPv4 address (BGP's is 32 bits).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from labkit.families import Family, family_of
from labkit.topology.bgp import BgpPlan
from labkit.topology.plan import MGMT_IFNAME, NodePlan, Plan


@dataclass(frozen=True)
class Prefix:
    prefix: str
    comment: str  # why this speaker originates it, written beside it in the config


@dataclass(frozen=True)
class Session:
    name: str  # the BIRD protocol's name (`show protocols`)
    address: str
    asn: int
    description: str  # the peer: a node name, or its address
    rr_client: bool = False  # this speaker reflects routes to the peer
    export_learned: bool = False  # the peer gets learned routes too, not only this speaker's own
    source: str = ""  # this speaker's address of the session's family ("": its router id)

    @property
    def family(self) -> int:
        """4 or 6: the family of the peer's address, the routes the session carries."""
        return family_of(self.address)


@dataclass(frozen=True)
class Speaker:
    node: str
    role: str  # "node" (a k8s-node) | "router" (a linux node peering with them)
    asn: int
    router_id: str
    sessions: tuple[Session, ...] = ()
    install: tuple[Prefix, ...] = ()  # originated, and installed in this node's kernel (blackhole)
    announce: tuple[Prefix, ...] = ()  # originated, announced only
    connected: tuple[str, ...] = ()  # interfaces whose networks a router announces
    families: tuple[int, ...] = (4,)  # the route families it carries (the cluster's, preferred first)

    def as_status(self) -> dict:
        """The static part of `nodes[].bgp` in status (the live part comes from birdc)."""
        return {"asn": self.asn, "router_id": self.router_id, "role": self.role,
                "families": list(self.families),
                "sessions": [{"name": s.name, "peer": s.description, "address": s.address, "asn": s.asn,
                              "family": s.family} for s in self.sessions]}

    def prefixes(self, kind: str, family: int) -> tuple[Prefix, ...]:
        """Its `install` or `announce` prefixes of one family (the template's static protocol per family)."""
        return tuple(p for p in getattr(self, kind) if family_of(p.prefix) == family)


def protocol_name(prefix: str, peer: str) -> str:
    """A BIRD symbol: letters, digits and '_' (node names may hold '-', addresses '.')."""
    return f"{prefix}_" + "".join(c if c.isalnum() else "_" for c in peer)


def _session_name(prefix: str, peer: str, family: int) -> str:
    return protocol_name(prefix, peer) + ("_v6" if family == 6 else "")


def _addresses(node: NodePlan) -> dict[Family, str]:
    """family -> the node's address on the node network."""
    found = {}
    if node.mgmt_ipv4 is not None:
        found[4] = str(node.mgmt_ipv4.ip)
    if node.mgmt_ipv6 is not None:
        found[6] = str(node.mgmt_ipv6.ip)
    return found


def _router_id(addresses: Mapping[int, str]) -> str:
    """BGP's router id is 32 bits: the node's IPv4 address (an IPv6-only cluster's nodes keep one on the
    node network), else its IPv6 address's last 32 bits."""
    if 4 in addresses:
        return addresses[4]
    return str(ipaddress.IPv4Address(int(ipaddress.IPv6Address(addresses[6])) & 0xFFFFFFFF))


def speakers(plan: Plan, announce: Mapping[str, Sequence[Prefix]] | None = None) -> list[Speaker]:
    """Every speaker of the lab (k8s-nodes first, then router nodes); empty unless the backend is bgp.

    `announce`: node -> further prefixes it originates to all its peers without installing them
    (e.g. LoadBalancer addresses, as MetalLB's BGP mode announces them from the nodes)."""
    cluster = plan.cluster
    if cluster is None or cluster.bgp is None:
        return []
    bgp: BgpPlan = cluster.bgp
    families = cluster.families
    nodes = []  # (name, family -> node address, podCIDRs)
    for n in plan.cluster_nodes:
        addresses = {f: a for f, a in _addresses(n).items() if f in families}
        cidrs = tuple(str(c) for c in n.pod_cidrs)
        if addresses and cidrs:
            nodes.append((n.name, addresses, cidrs))
    found = []
    for name, addresses, pod_cidrs in nodes:
        sessions = []
        for other, other_addresses, _ in nodes:
            if other == name:
                continue
            for family in families:
                if family not in addresses or family not in other_addresses:
                    continue
                ip, source = other_addresses[family], addresses[family]
                if bgp.mesh:
                    sessions.append(Session(_session_name("node", other, family), ip, bgp.asn, other, source=source))
                elif bgp.is_reflector(name):
                    client = not bgp.is_reflector(other)
                    sessions.append(Session(_session_name("client" if client else "rr", other, family), ip, bgp.asn,
                                            other, rr_client=client, export_learned=True, source=source))
                elif bgp.is_reflector(other):
                    sessions.append(Session(_session_name("rr", other, family), ip, bgp.asn, other, source=source))
        for peer in bgp.peers:
            label = peer.node or str(peer.address)
            for family, ip in _peer_addresses(plan, peer).items():
                if family in addresses:
                    sessions.append(Session(_session_name("peer", label, family), ip, peer.asn, label,
                                            source=addresses[family]))
        found.append(Speaker(name, "node", bgp.asn, _router_id(_addresses(plan.node(name))), tuple(sessions),
                             install=tuple(Prefix(c, f"podCIDR of {name}") for c in pod_cidrs),
                             announce=tuple((announce or {}).get(name, ())),
                             families=tuple(f for f in families if f in addresses)))
    for peer in bgp.router_nodes:
        assert peer.node is not None
        router = plan.node(peer.node)
        mine = _peer_addresses(plan, peer)
        connected = tuple(i.name for i in router.interfaces if i.name != MGMT_IFNAME and i.addresses)
        sessions = tuple(Session(_session_name("node", name, family), addresses[family], bgp.asn, name,
                                 source=mine[family])
                         for name, addresses, _ in nodes for family in families
                         if family in addresses and family in mine)
        found.append(Speaker(router.name, "router", peer.asn, _router_id(_addresses(router)), sessions,
                             connected=connected,
                             families=tuple(f for f in families if f in mine)))
    return found


def _peer_addresses(plan: Plan, peer) -> dict[int, str]:  # peer: BgpPeerPlan
    """family -> the peer's address the nodes session with: a router node's of each family the
    cluster has, or the one `address` given."""
    if peer.node is None:
        return {peer.address.version: str(peer.address)}
    families = plan.cluster.families if plan.cluster is not None else (4,)
    return {f: a for f, a in _addresses(plan.node(peer.node)).items() if f in families}
