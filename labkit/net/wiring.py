"""Wiring a planned lab into namespaces: veth links, addresses, bridges, sysctls, routes.

Works on network namespace paths only, so it is the same for every runtime:
/run/netns/<name> for the netns runtime, /proc/<pid>/ns/net for containers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from labkit.errors import LabkitError
from labkit.net import netns
from labkit.net.netlink import Batch, link_indexes
from labkit.topology.plan import BRIDGE_IFNAME, MgmtPlan, NodePlan, Plan


def create_links(plan: Plan, netns_paths: dict[str, str]) -> None:
    """Every veth pair, created with both ends in place, from one socket in the host."""
    fds: dict[str, int] = {}
    try:
        for node, path in netns_paths.items():
            fds[node] = os.open(path, os.O_RDONLY)
        batch = Batch()
        for link in plan.links:
            batch.veth(link.a.ifname, fds[link.a.node], link.b.ifname, fds[link.b.node], link.mtu,
                       what=f"create link {link.a.node}:{link.a.ifname} -- {link.b.node}:{link.b.ifname}")
        if plan.mgmt:
            fds["_mgmt"] = os.open(netns.netns_path(plan.mgmt.netns), os.O_RDONLY)
            for node in plan.nodes:
                if node.mgmt_ipv4:
                    batch.veth(node.name, fds["_mgmt"], "eth0", fds[node.name],
                               what=f"connect {node.name}:eth0 to the mgmt network")
        batch.send()
    finally:
        for fd in fds.values():
            os.close(fd)


def configure_node(node: NodePlan) -> None:
    """Runs inside the node's namespace: bring everything up, then addresses, sysctls, routes."""
    if node.kind_info.l2_bridge:
        first = Batch()
        first.bridge(BRIDGE_IFNAME)
        first.send()
    indexes = link_indexes()
    batch = Batch()
    batch.link_up(indexes["lo"], "lo")
    master = indexes.get(BRIDGE_IFNAME) if node.kind_info.l2_bridge else None
    for iface in node.interfaces:
        batch.link_up(indexes[iface.name], f"{node.name}:{iface.name}", master=master, mtu=iface.mtu)
        for address in iface.addresses:
            batch.address(indexes[iface.name], f"{node.name}:{iface.name}", str(address.ip),
                          address.network.prefixlen)
    batch.send()
    write_sysctls(node.sysctls, node.name)
    for route in node.routes:
        batch.route(route.dst, route.via, indexes[route.dev] if route.dev else None,
                    what=f"add route {route.dst} on {node.name}")
    batch.send()


def write_sysctls(sysctls: Sequence[tuple[str, str]], where: str) -> None:
    """Set sysctls of the calling thread's network namespace (net.* files are per namespace)."""
    for key, value in sysctls:
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(path, "w", encoding="ascii") as fh:
                fh.write(value)
        except OSError as exc:
            raise LabkitError(f"sysctl {key}={value} on {where}: {exc.strerror}") from None


def configure_nodes(plan: Plan, netns_paths: dict[str, str]) -> None:
    """Each node from one thread that moves through their namespaces; then the mgmt bridge."""
    by_path = {netns_paths[n.name]: n for n in plan.nodes}
    netns.for_each_netns(list(by_path), lambda path: configure_node(by_path[path]))
    if plan.mgmt:
        mgmt = plan.mgmt

        def bridge_ports() -> None:
            first = Batch()
            first.bridge(mgmt.bridge)
            first.send()
            indexes = link_indexes()
            batch = Batch()
            batch.link_up(indexes["lo"], "lo")
            for node in plan.nodes:
                if node.mgmt_ipv4:
                    batch.link_up(indexes[node.name], f"mgmt port of {node.name}", master=indexes[mgmt.bridge])
            batch.send()

        netns.run_in_netns(netns.netns_path(mgmt.netns), bridge_ports)


def connect_host(mgmt: MgmtPlan) -> None:
    """For `host-access: true`: a veth from the host into the mgmt bridge, holding the gateway address."""
    fd = os.open(netns.netns_path(mgmt.netns), os.O_RDONLY)
    host = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        batch = Batch()
        batch.veth(mgmt.host_ifname, host, "host", fd, what=f"create host link {mgmt.host_ifname}")
        batch.send()
    finally:
        os.close(fd)
        os.close(host)
    indexes = link_indexes()
    batch = Batch()
    batch.address(indexes[mgmt.host_ifname], mgmt.host_ifname, str(mgmt.gateway.ip), mgmt.subnet.prefixlen)
    batch.send()

    def enslave() -> None:
        idx = link_indexes()
        port = Batch()
        port.link_up(idx["host"], "mgmt port of the host", master=idx[mgmt.bridge])
        port.send()

    netns.run_in_netns(netns.netns_path(mgmt.netns), enslave)


def add_device_route(netns_path: str, dst: str, dev: str) -> None:
    """`ip route add DST dev DEV` inside a namespace."""

    def add() -> None:
        batch = Batch()
        batch.route(dst, oif=link_indexes()[dev], what=f"add route {dst} dev {dev}")
        batch.send()

    netns.run_in_netns(netns_path, add)
