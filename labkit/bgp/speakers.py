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

`Speaker.announce` is where other originated prefixes go (a LoadBalancer's /32, MetalLB's
BGP mode): announced, not installed in the node's own kernel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from labkit.topology.bgp import BgpPlan
from labkit.topology.plan import MGMT_IFNAME, Plan


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

    def as_status(self) -> dict:
        """The static part of `nodes[].bgp` in status (the live part comes from birdc)."""
        return {"asn": self.asn, "router_id": self.router_id, "role": self.role,
                "sessions": [{"name": s.name, "peer": s.description, "address": s.address, "asn": s.asn}
                             for s in self.sessions]}


def protocol_name(prefix: str, peer: str) -> str:
    """A BIRD symbol: letters, digits and '_' (node names may hold '-', addresses '.')."""
    return f"{prefix}_" + "".join(c if c.isalnum() else "_" for c in peer)


def speakers(plan: Plan, announce: Mapping[str, Sequence[Prefix]] | None = None) -> list[Speaker]:
    """Every speaker of the lab (k8s-nodes first, then router nodes); empty unless the backend is bgp.

    `announce`: node -> further prefixes it originates to all its peers without installing them
    (e.g. LoadBalancer addresses, as MetalLB's BGP mode announces them from the nodes)."""
    cluster = plan.cluster
    if cluster is None or cluster.bgp is None:
        return []
    bgp: BgpPlan = cluster.bgp
    nodes = [(n.name, str(n.mgmt_ipv4.ip), str(n.pod_cidr)) for n in plan.cluster_nodes
             if n.mgmt_ipv4 is not None and n.pod_cidr is not None]
    found = []
    for name, ip, pod_cidr in nodes:
        sessions = []
        for other, other_ip, _ in nodes:
            if other == name:
                continue
            if bgp.mesh:
                sessions.append(Session(protocol_name("node", other), other_ip, bgp.asn, other))
            elif bgp.is_reflector(name):
                client = not bgp.is_reflector(other)
                sessions.append(Session(protocol_name("client" if client else "rr", other), other_ip, bgp.asn,
                                        other, rr_client=client, export_learned=True))
            elif bgp.is_reflector(other):
                sessions.append(Session(protocol_name("rr", other), other_ip, bgp.asn, other))
        for peer in bgp.peers:
            label = peer.node or str(peer.address)
            sessions.append(Session(protocol_name("peer", label), str(peer.address), peer.asn, label))
        found.append(Speaker(name, "node", bgp.asn, ip, tuple(sessions),
                             install=(Prefix(pod_cidr, f"podCIDR of {name}"),),
                             announce=tuple((announce or {}).get(name, ()))))
    for peer in bgp.router_nodes:
        assert peer.node is not None
        router = plan.node(peer.node)
        connected = tuple(i.name for i in router.interfaces if i.name != MGMT_IFNAME and i.addresses)
        sessions = tuple(Session(protocol_name("node", name), ip, bgp.asn, name) for name, ip, _ in nodes)
        found.append(Speaker(router.name, "router", peer.asn, str(peer.address), sessions, connected=connected))
    return found
