"""What every CNI backend is: the `Backend` protocol, the node it works on, its error.

A backend makes one node route to every peer node's podCIDR (and undoes it).
It works on the node's network namespace through `labkit.net.netlink` only,
from a socket opened in that namespace: no thread moves, no subprocess.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from typing import ClassVar, Protocol

from labkit.errors import LabkitError
from labkit.net.netlink import Netlink, NetlinkError

_IFNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,14}$")
_MAC_RE = re.compile(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}")


class BackendError(LabkitError):
    """A node-network change failed; the message says which node and what."""


@dataclass(frozen=True)
class ClusterNode:
    """One cluster node as the CNI backends see it: its podCIDR per address family, and its addresses on
    the node network (the underlay: IPv4 always; IPv6 for a node whose pods have IPv6 and host-gw routes)."""

    name: str
    netns_path: str  # e.g. /run/netns/<lab>-<node>
    node_ip: str  # the node's IPv4 address on the mgmt network (eth0): the underlay of every backend
    pod_cidr: str  # the node's podCIDR of the cluster's preferred family, e.g. 10.244.1.0/24
    vtep_mac: str | None = None  # vxlan: default derived from node_ip
    pod_cidrs: tuple[str, ...] = ()  # every podCIDR of the node, one per family, pod_cidr's first; () = (pod_cidr,)
    node_ip6: str | None = None  # the node's IPv6 address on the mgmt network: host-gw's next hop for IPv6

    @property
    def pod_nets(self) -> tuple[IPv4Network | IPv6Network, ...]:
        """The node's podCIDRs, one per family, the preferred family's first."""
        return tuple(ip_network(c, strict=False) for c in (self.pod_cidrs or (self.pod_cidr,)))

    @property
    def pod_net(self) -> IPv4Network | IPv6Network:
        return self.pod_nets[0]

    @property
    def vtep_ip(self) -> str:
        """The IPv4 podCIDR's .0, held as /32 on a vxlan device."""
        return self.vtep_ip_of(self.pod_net_of(4) or self.pod_net)

    @staticmethod
    def vtep_ip_of(net: IPv4Network | IPv6Network) -> str:
        """A podCIDR's own address on a vxlan device: its first (.0; for IPv6 the podCIDR's ::), as flannel."""
        return str(net.network_address)

    def pod_net_of(self, family: int) -> IPv4Network | IPv6Network | None:
        return next((n for n in self.pod_nets if n.version == family), None)

    def next_hop(self, family: int) -> str | None:
        """The node's address on the node network of `family` (host-gw routes to its pods go via it)."""
        return self.node_ip if family == 4 else self.node_ip6

    @property
    def mac(self) -> str:
        return self.vtep_mac or vtep_mac_for(self.node_ip)

    def validate(self) -> None:
        if not str(self.netns_path).startswith("/"):
            raise ValueError(f"node {self.name}: netns_path must be an absolute path")
        IPv4Address(self.node_ip)
        if self.node_ip6 is not None:
            IPv6Address(self.node_ip6)
        nets = self.pod_nets
        if len({n.version for n in nets}) != len(nets):
            raise ValueError(f"node {self.name}: one podCIDR per address family, got {', '.join(map(str, nets))}")
        if self.pod_cidrs and ip_network(self.pod_cidr, strict=False) != nets[0]:
            raise ValueError(f"node {self.name}: pod_cidr {self.pod_cidr} must be the first of pod_cidrs")
        if self.vtep_mac is not None and not _MAC_RE.fullmatch(self.vtep_mac):
            raise ValueError(f"node {self.name}: invalid vtep_mac {self.vtep_mac!r}")


def vtep_mac_for(node_ip: str) -> str:
    """A stable, locally administered unicast MAC for a node's VTEP."""
    return "0e:6c:" + ":".join(f"{x:02x}" for x in IPv4Address(node_ip).packed)


def check_ifname(dev: str) -> None:
    if not _IFNAME_RE.match(dev):
        raise ValueError(f"invalid interface name {dev!r}")


def device_index(sock: Netlink, node: ClusterNode, dev: str) -> int:
    link = sock.link(dev)
    if link is None:
        raise BackendError(f"node {node.name}: no interface {dev} in {node.netns_path}")
    return link["index"]


def underlay_mtu(netns_path: str, dev: str = "eth0") -> int:
    """The MTU of `dev` (the node's mgmt interface) in the namespace at `netns_path`."""
    with Netlink.in_netns(netns_path) as sock:
        link = sock.link(dev)
    if link is None:
        raise BackendError(f"no interface {dev} in {netns_path}")
    return int(link["mtu"] or 1500)


class Backend(Protocol):
    """Cross-node pod routing. Implementations are registered in labkit.cni.backends.REGISTRY."""

    name: ClassVar[str]
    overhead: ClassVar[int]  # bytes of encapsulation per packet: pods get the underlay MTU minus this

    def pod_mtu(self, underlay_mtu: int = 1500) -> int:
        """The MTU pods get (the conflist's `mtu`)."""
        ...

    def apply(self, sock: Netlink, local: ClusterNode, peers: Sequence[ClusterNode], *, dev: str,
              mtu: int | None) -> None:
        """Make `local` (whose namespace `sock` talks to) route to every peer's podCIDR; idempotent.
        `peers` excludes `local`; `dev` is the mgmt interface; `mtu` the device MTU, if the backend has one."""
        ...

    def remove(self, sock: Netlink, local: ClusterNode, peers: Sequence[ClusterNode], *, dev: str) -> None:
        """Undo `apply`; pieces already gone are fine."""
        ...


class RoutedBackend:
    """Shared defaults: no encapsulation, so pods get the underlay's MTU."""

    name: ClassVar[str]
    overhead: ClassVar[int] = 0

    def pod_mtu(self, underlay_mtu: int = 1500) -> int:
        return underlay_mtu - self.overhead


def on_node(node: ClusterNode, what: str, work) -> None:
    """work(sock) with a netlink socket in `node`'s namespace; netlink failures become a BackendError."""
    try:
        with Netlink.in_netns(node.netns_path) as sock:
            work(sock)
    except NetlinkError as e:
        raise BackendError(f"{what} on node {node.name} ({node.netns_path}): {e}") from None
    except OSError as e:
        raise BackendError(f"{what} on node {node.name}: cannot open {node.netns_path}: {e.strerror}") from None
