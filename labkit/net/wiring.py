"""Wiring a planned lab into namespaces: veth links, addresses, bridges, sysctls, routes.

Works on network namespace paths only, so it is the same for every runtime:
/run/netns/<name> for the netns runtime, /proc/<pid>/ns/net for containers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from labkit.errors import LabkitError
from labkit.net import netns
from labkit.net import netlink as nl
from labkit.topology.plan import BRIDGE_IFNAME, MgmtPlan, NodePlan, Plan


# Numbered by the kernel, the first link of two fresh namespaces is ifindex 2 at both ends, and a veth
# whose index equals its peer's has its carrier changes handled as not urgent, up to a second late: a
# bridge port that does not forward yet when `up` returns. So one end of every link and mgmt port is
# numbered here, above anything the kernel hands out; the other ends (a node's eth0, ...) are the kernel's.
LINK_INDEX_BASE = 1 << 20


# IPv6 in a namespace that has IPv6 addresses: no router advertisements taken (labkit's routes are the
# routes), and no duplicate address detection, so no address (a link-local one neither) is `tentative`
# when `up` returns. Set on `all` and `default` before the namespace's links exist, so every interface is
# born with them; `disable_ipv6` too, as a container engine may have set it.
IPV6_NAMESPACE_SYSCTLS = tuple(
    (f"net.ipv6.conf.{conf}.{key}", value)
    for conf in ("all", "default") for key, value in (("disable_ipv6", "0"), ("accept_ra", "0"), ("accept_dad", "0"))
)


def ipv6_namespaces(plan: Plan, netns_paths: dict[str, str]) -> list[str]:
    """The namespaces that get IPv6 set up: the nodes with IPv6 addresses, and the mgmt network's."""
    found = [netns_paths[n.name] for n in plan.nodes if n.has_ipv6 and n.name in netns_paths]
    if plan.mgmt and plan.mgmt.subnet6 is not None:
        found.append(netns.netns_path(plan.mgmt.netns))
    return found


def prepare_ipv6(plan: Plan, netns_paths: dict[str, str]) -> None:
    """IPV6_NAMESPACE_SYSCTLS in every namespace that gets IPv6, before its links are made."""
    paths = ipv6_namespaces(plan, netns_paths)
    if paths:
        netns.for_each_netns(paths, lambda path: write_sysctls(IPV6_NAMESPACE_SYSCTLS, path))


def create_links(plan: Plan, netns_paths: dict[str, str]) -> None:
    """Every veth pair, created with both ends in place, from one socket in the host."""
    prepare_ipv6(plan, netns_paths)
    fds: dict[str, int] = {}
    try:
        for node, path in netns_paths.items():
            fds[node] = os.open(path, os.O_RDONLY)
        batch = [nl.veth(link.a.ifname, link.b.ifname, netns_fd=fds[link.a.node], peer_netns_fd=fds[link.b.node],
                         mtu=link.mtu, up=True, index=LINK_INDEX_BASE + i,
                         what=f"create link {link.a.node}:{link.a.ifname} -- {link.b.node}:{link.b.ifname}")
                 for i, link in enumerate(plan.links)]
        if plan.mgmt:
            fds["_mgmt"] = os.open(netns.netns_path(plan.mgmt.netns), os.O_RDONLY)
            first = LINK_INDEX_BASE + len(plan.links)
            batch += [nl.veth(node.port, "eth0", netns_fd=fds["_mgmt"], peer_netns_fd=fds[node.name], up=True,
                              index=first + i, what=f"connect {node.name}:eth0 to the mgmt network")
                      for i, node in enumerate(n for n in plan.nodes if n.mgmt_ipv4)]
        batch += external_links(plan, fds)
        nl.send(*batch)
    finally:
        for fd in fds.values():
            os.close(fd)
    mark_host_links(plan)


def host_link_alias(lab: str) -> str:
    """The alias (`ip link show` says it) marking a host end of a lab's `host` link: `down` finds
    and removes the lab's host ends by it, never another's, whatever the user named them."""
    return f"labkit lab {lab}"


def external_links(plan: Plan, fds: dict[str, int]) -> list[nl.Request]:
    """containerlab's one-ended links: `host` (a veth into the host, its end named as written),
    `mgmt-net` (a veth into the mgmt bridge's namespace) and `macvlan` (of a host interface)."""
    batch = []
    if any(x.type == "host" for x in plan.external_links):
        fds["_host"] = os.open("/proc/self/ns/net", os.O_RDONLY)  # closed with the others, after the batch
    host = fds.get("_host")
    parents = nl.link_indexes() if any(x.type == "macvlan" for x in plan.external_links) else {}
    for x in plan.external_links:
        where = f"{x.node}:{x.ifname}"
        if x.type == "host":
            batch.append(nl.veth(x.ifname, x.host_ifname, netns_fd=fds[x.node], peer_netns_fd=host, up=True,
                                 mtu=x.mtu, what=f"create host link {where} -- host:{x.host_ifname}"))
        elif x.type == "mgmt-net":
            batch.append(nl.veth(x.ifname, x.host_ifname, netns_fd=fds[x.node], peer_netns_fd=fds["_mgmt"],
                                 up=True, mtu=x.mtu, what=f"create mgmt-net link {where} -- {x.host_ifname}"))
        elif x.type == "macvlan":
            if x.host_ifname not in parents:
                raise LabkitError(f"macvlan link of {where}: the host has no interface {x.host_ifname!r}")
            batch.append(nl.macvlan(x.ifname, parents[x.host_ifname], mode=x.mode, netns_fd=fds[x.node],
                                    mtu=x.mtu, what=f"create macvlan {where} of host:{x.host_ifname}"))
    return batch


def mark_host_links(plan: Plan) -> None:
    """Bring up each host end of a `host` link and mark it as the lab's (host_link_alias)."""
    hosts = [x for x in plan.external_links if x.type == "host"]
    if not hosts:
        return
    with nl.Netlink() as sock:
        indexes = sock.link_indexes()
        sock.do(*[nl.set_link(indexes[x.host_ifname], up=True, alias=host_link_alias(plan.lab),
                              what=f"bring up host:{x.host_ifname}") for x in hosts])


def lab_host_links(lab: str) -> list[str]:
    """The host ends of `lab`'s `host` links that exist, found by their mark."""
    with nl.Netlink() as sock:
        return [link["name"] for link in sock.links() if link.get("alias") == host_link_alias(lab)]


def remove_lab_host_links(lab: str) -> None:
    with nl.Netlink() as sock:
        for name in [link["name"] for link in sock.links() if link.get("alias") == host_link_alias(lab)]:
            sock.delete_link(name)


def configure_node(node: NodePlan) -> None:
    """Runs inside the node's namespace: bring everything up, then addresses, sysctls, routes."""
    with nl.Netlink() as sock:
        if node.kind_info.l2_bridge:
            sock.do(nl.bridge(BRIDGE_IFNAME))
        indexes = sock.link_indexes()
        batch = [nl.set_link(indexes["lo"], up=True, what=f"bring up {node.name}:lo")]
        master = indexes.get(BRIDGE_IFNAME) if node.kind_info.l2_bridge else None
        for iface in node.interfaces:
            where = f"{node.name}:{iface.name}"
            batch.append(nl.set_link(indexes[iface.name], up=True, master=master, mtu=iface.mtu,
                                     what=f"bring up {where}"))
            batch += [nl.address(indexes[iface.name], str(a.ip), a.network.prefixlen, exist_ok=True, nodad=True,
                                 what=f"add address {a} to {where}") for a in iface.addresses]
        sock.do(*batch)
        write_sysctls(node.sysctls, node.name)
        sock.do(*[nl.route(r.dst, gateway=r.via, oif=indexes[r.dev] if r.dev else None, proto=nl.RTPROT_STATIC,
                           what=f"add route {r.dst} on {node.name}") for r in node.routes])


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
            with nl.Netlink() as sock:
                sock.do(nl.bridge(mgmt.bridge))
                indexes = sock.link_indexes()
                sock.do(nl.set_link(indexes["lo"], up=True, what="bring up lo of the mgmt network"),
                        *[nl.set_link(indexes[node.port], up=True, master=indexes[mgmt.bridge],
                                      what=f"bring up the mgmt port of {node.name}")
                          for node in plan.nodes if node.mgmt_ipv4],
                        *[nl.set_link(indexes[x.host_ifname], up=True, master=indexes[mgmt.bridge],
                                      what=f"bring up the mgmt-net port {x.host_ifname}")
                          for x in plan.external_links if x.type == "mgmt-net"])

        netns.run_in_netns(netns.netns_path(mgmt.netns), bridge_ports)


def connect_host(mgmt: MgmtPlan) -> None:
    """For `host-access: true`: a veth from the host into the mgmt bridge, holding the gateway address."""
    fd = os.open(netns.netns_path(mgmt.netns), os.O_RDONLY)
    host = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        nl.send(nl.veth(mgmt.host_ifname, "host", netns_fd=host, peer_netns_fd=fd, up=True,
                        what=f"create host link {mgmt.host_ifname}"))
    finally:
        os.close(fd)
        os.close(host)
    if mgmt.gateway6 is not None:  # the lab's own interface in the host: no DAD, no RAs on it either (before
        for key in ("accept_ra", "accept_dad"):  # its carrier is up, so its link-local address is never tentative)
            with open(f"/proc/sys/net/ipv6/conf/{mgmt.host_ifname}/{key}", "w", encoding="ascii") as fh:
                fh.write("0")
    with nl.Netlink() as sock:
        index = sock.link_indexes()[mgmt.host_ifname]
        sock.do(*[nl.address(index, str(gw.ip), gw.network.prefixlen, exist_ok=True, nodad=True,
                             what=f"add address {gw} to {mgmt.host_ifname}")
                  for gw in (mgmt.gateway, mgmt.gateway6) if gw is not None])

    def enslave() -> None:
        idx = nl.link_indexes()
        nl.send(nl.set_link(idx["host"], up=True, master=idx[mgmt.bridge], what="bring up the mgmt port of the host"))

    netns.run_in_netns(netns.netns_path(mgmt.netns), enslave)


def add_device_route(netns_path: str, dst: str, dev: str) -> None:
    """`ip route add DST dev DEV` inside a namespace."""

    def add() -> None:
        with nl.Netlink() as sock:
            sock.do(nl.route(dst, oif=sock.link_indexes()[dev], proto=nl.RTPROT_STATIC,
                             what=f"add route {dst} dev {dev}"))

    netns.run_in_netns(netns_path, add)


def remove_host_link(name: str) -> bool:
    """Delete the host's end of a `host-access` link (its peer goes with it); False if it is not there."""
    with nl.Netlink() as sock:
        return sock.delete_link(name)
