"""bgp (Calico's model): pod routes between nodes come from BGP, never from labkit.

Each node's BIRD (labkit.bgp, started by the `bgp` phase) announces the node's podCIDR
(a blackhole route for the whole block, as Calico installs for its IPAM blocks) and installs
the routes it learns from its peers (`proto bird`). So this backend adds nothing itself:
it is routed, without encapsulation, and its routes appear once the sessions are up.
"""

from __future__ import annotations

from collections.abc import Sequence

from labkit.net import netlink as nl

from .base import ClusterNode, RoutedBackend


class Bgp(RoutedBackend):
    name = "bgp"

    def apply(self, sock: nl.Netlink, local: ClusterNode, peers: Sequence[ClusterNode], *, dev: str,
              mtu: int | None) -> None:
        """Nothing: the node's BGP daemon installs the routes to its peers' podCIDRs."""

    def remove(self, sock: nl.Netlink, local: ClusterNode, peers: Sequence[ClusterNode], *, dev: str) -> None:
        """Nothing: the daemon takes its routes with it when it stops."""
