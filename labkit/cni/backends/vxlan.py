"""vxlan (flannel's vxlan backend): a `flannel.1` device per node, peers reached through it.

Device `flannel.1` (VNI 1, UDP 8472, nolearning, local = node IP, dev = the mgmt
interface, MTU = underlay - 50) holding `<podCIDR .0>/32`; per peer a permanent
neighbour (peer .0 -> peer VTEP MAC), an FDB entry (peer VTEP MAC -> peer node IP)
and `route <peer podCIDR> via <peer .0> dev flannel.1 onlink`. VTEP MACs are derived
from the node IP (`0e:6c:<ip bytes>`), so peers need no exchange.

Dual-stack: the one device carries both families inside (the underlay stays IPv4, as flannel's
`flannel.1` does with an IPv4 public IP): it also holds `<IPv6 podCIDR ::>/128` (nodad: usable at
once), and per peer a permanent IPv6 neighbour (peer `::` -> peer VTEP MAC) and `route <peer IPv6
podCIDR> via <peer ::> dev flannel.1 onlink`; the FDB entry, per MAC, serves both.
"""

from __future__ import annotations

from collections.abc import Sequence

from labkit.net import netlink as nl

from .base import BackendError, ClusterNode, RoutedBackend

VXLAN_DEV = "flannel.1"
VXLAN_VNI = 1
VXLAN_PORT = 8472
VXLAN_OVERHEAD = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14


class Vxlan(RoutedBackend):
    name = "vxlan"
    overhead = VXLAN_OVERHEAD

    def apply(self, sock: nl.Netlink, local: ClusterNode, peers: Sequence[ClusterNode], *, dev: str,
              mtu: int | None) -> None:
        underlay = sock.link(dev)
        if underlay is None:
            raise BackendError(f"node {local.name}: no interface {dev} in {local.netns_path}")
        oif = underlay["index"]
        if mtu is None:
            mtu = self.pod_mtu(underlay["mtu"] or 1500)
        link = sock.link(VXLAN_DEV)
        if link is not None and not _is_ours(link, local):
            sock.do(nl.del_link(VXLAN_DEV))  # another VNI, port, address or kind: rebuilt below
            link = None
        if link is None:
            sock.do(nl.vxlan(VXLAN_DEV, vni=VXLAN_VNI, local=local.node_ip, dev_index=oif, port=VXLAN_PORT,
                             mac=local.mac, mtu=mtu))
            link = sock.link(VXLAN_DEV)
        index = link["index"]
        batch = [nl.set_link(index, up=True, mtu=mtu, what=f"bring up {VXLAN_DEV}")]
        batch += [nl.address(index, local.vtep_ip_of(net), net.max_prefixlen, replace=True, nodad=True)
                  for net in local.pod_nets]
        for p in peers:
            batch.append(nl.fdb(p.mac, index, p.node_ip, what=f"fdb entry of {p.name}"))
            for net in p.pod_nets:
                vtep = p.vtep_ip_of(net)
                batch += [
                    nl.neighbour(vtep, p.mac, index, what=f"neighbour {vtep} of {p.name}"),
                    nl.route(str(net), gateway=vtep, oif=index, onlink=True, replace=True,
                             what=f"route {net} via {vtep} dev {VXLAN_DEV}"),
                ]
        sock.do(*batch)

    def remove(self, sock: nl.Netlink, local: ClusterNode, peers: Sequence[ClusterNode], *, dev: str) -> None:
        sock.delete_link(VXLAN_DEV)


def _is_ours(link: dict, local: ClusterNode) -> bool:
    info = nl.vxlan_info(link)
    return (info.get("id") == VXLAN_VNI and info.get("port") == VXLAN_PORT and info.get("local") == local.node_ip
            and link["mac"] == local.mac.lower())
