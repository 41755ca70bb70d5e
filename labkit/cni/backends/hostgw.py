"""host-gw (kindnet, flannel host-gw): in each node, a route per peer podCIDR via the peer's node IP.

Needs every node on one L2 segment (the mgmt bridge); adds no header, so pods keep the full MTU.
"""

from __future__ import annotations

from collections.abc import Sequence

from labkit.net import netlink as nl

from .base import ClusterNode, RoutedBackend, device_index


class HostGw(RoutedBackend):
    name = "host-gw"

    def apply(self, sock: nl.Netlink, local: ClusterNode, peers: Sequence[ClusterNode], *, dev: str,
              mtu: int | None) -> None:
        oif = device_index(sock, local, dev)
        sock.do(*[nl.route(str(p.pod_net), gateway=p.node_ip, oif=oif, replace=True, proto=nl.RTPROT_STATIC,
                           what=f"route {p.pod_net} via {p.node_ip} dev {dev}") for p in peers])

    def remove(self, sock: nl.Netlink, local: ClusterNode, peers: Sequence[ClusterNode], *, dev: str) -> None:
        link = sock.link(dev)
        if link is None:
            return  # the routes went with the interface
        sock.do(*[nl.del_route(str(p.pod_net), gateway=p.node_ip, oif=link["index"]) for p in peers])
