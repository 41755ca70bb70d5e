"""host-gw (kindnet, flannel host-gw): in each node, a route per peer podCIDR via the peer's node IP.

Per address family: a peer's IPv4 podCIDR via its IPv4 node address, its IPv6 podCIDR via its IPv6
node address (kindnet's dual-stack routes). Needs every node on one L2 segment (the mgmt bridge);
adds no header, so pods keep the full MTU.
"""

from __future__ import annotations

from collections.abc import Sequence

from labkit.net import netlink as nl

from .base import BackendError, ClusterNode, RoutedBackend, device_index


def peer_routes(peers: Sequence[ClusterNode]) -> list[tuple[str, str]]:
    """(peer podCIDR, next hop) of every family of every peer; a BackendError for a family without one."""
    out = []
    for p in peers:
        for net in p.pod_nets:
            via = p.next_hop(net.version)
            if via is None:
                raise BackendError(f"node {p.name} has no IPv{net.version} address on the node network: "
                                   f"host-gw cannot route to its podCIDR {net}")
            out.append((str(net), via))
    return out


class HostGw(RoutedBackend):
    name = "host-gw"

    def apply(self, sock: nl.Netlink, local: ClusterNode, peers: Sequence[ClusterNode], *, dev: str,
              mtu: int | None) -> None:
        oif = device_index(sock, local, dev)
        sock.do(*[nl.route(net, gateway=via, oif=oif, replace=True, proto=nl.RTPROT_STATIC,
                           what=f"route {net} via {via} dev {dev}") for net, via in peer_routes(peers)])

    def remove(self, sock: nl.Netlink, local: ClusterNode, peers: Sequence[ClusterNode], *, dev: str) -> None:
        link = sock.link(dev)
        if link is None:
            return  # the routes went with the interface
        sock.do(*[nl.del_route(str(net), gateway=p.next_hop(net.version), oif=link["index"])
                  for p in peers for net in p.pod_nets])
