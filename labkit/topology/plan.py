"""The plan: a fully resolved, immutable description of a lab, computed before anything exists.

Every namespace name, interface name and address is decided here, and every
semantic check runs here, so `up` either builds exactly this or nothing.
Problems are collected (not raised one by one) and each carries the path of
the topology key it is about, so the message can name its line.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from labkit.topology.expand import effective_settings
from labkit.topology.load import dotted
from labkit.topology.schema import IFNAME, NODE_KINDS, NODE_NAME, Topology

IPv4Interface = ipaddress.IPv4Interface
SYSCTL_KEY = re.compile(r"^[a-z0-9_]+(?:[./][a-z0-9_-]+)+$")
MGMT_IFNAME = "eth0"
MGMT_BRIDGE = "mgmt0"
BRIDGE_IFNAME = "br0"


def netns_prefix(lab: str) -> str:
    """Every namespace of lab `lab` starts with this; '.' cannot occur in a lab name."""
    return f"lk-{lab}."


def node_netns(lab: str, node: str) -> str:
    return f"{netns_prefix(lab)}{node}"


def mgmt_netns(lab: str) -> str:
    return f"{netns_prefix(lab)}_mgmt"


def host_link_name(lab: str) -> str:
    """The host's end of the mgmt network when `host-access` is on (<= 15 chars)."""
    return f"lk-{lab}"


@dataclass(frozen=True)
class Route:
    dst: str  # prefix or "default"
    via: str | None
    dev: str | None


@dataclass(frozen=True)
class Interface:
    name: str
    addresses: tuple[IPv4Interface, ...] = ()
    mtu: int | None = None
    peer_node: str | None = None  # None for the mgmt interface (its peer is in the mgmt namespace)
    peer_ifname: str | None = None


@dataclass(frozen=True)
class NodePlan:
    name: str
    kind: str
    index: int
    netns: str
    image: str | None = None
    interfaces: tuple[Interface, ...] = ()
    routes: tuple[Route, ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()
    exec: tuple[tuple[str, ...], ...] = ()
    mgmt_ipv4: IPv4Interface | None = None
    pod_cidr: ipaddress.IPv4Network | None = None

    def interface(self, name: str) -> Interface:
        return next(i for i in self.interfaces if i.name == name)


@dataclass(frozen=True)
class LinkEnd:
    node: str
    ifname: str


@dataclass(frozen=True)
class LinkPlan:
    a: LinkEnd
    b: LinkEnd
    mtu: int | None = None


@dataclass(frozen=True)
class MgmtPlan:
    netns: str
    bridge: str
    subnet: ipaddress.IPv4Network
    gateway: IPv4Interface  # the bridge's own address; the host's when host-access is on
    host_access: bool
    host_ifname: str


@dataclass(frozen=True)
class ClusterPlan:
    domain: str
    pod_cidr: ipaddress.IPv4Network
    service_cidr: ipaddress.IPv4Network
    backend: str
    mtu: int | None
    dns_ip: ipaddress.IPv4Address
    dns_replicas: int
    dns_upstreams: tuple[str, ...]
    dns_workers: int | None = None    # DNS server processes per replica; None: one per two CPUs


@dataclass(frozen=True)
class Plan:
    lab: str
    runtime: str
    source: str
    nodes: tuple[NodePlan, ...]
    links: tuple[LinkPlan, ...]
    mgmt: MgmtPlan | None = None
    cluster: ClusterPlan | None = None
    workloads: tuple[Any, ...] = ()
    expect: tuple[dict, ...] = field(default_factory=tuple)

    def node(self, name: str) -> NodePlan:
        return next(n for n in self.nodes if n.name == name)

    @property
    def netns_prefix(self) -> str:
        return netns_prefix(self.lab)


@dataclass
class PlanProblem:
    path: tuple[str | int, ...]
    message: str


class _Collector:
    def __init__(self) -> None:
        self.problems: list[PlanProblem] = []

    def add(self, path: tuple[str | int, ...], message: str) -> None:
        self.problems.append(PlanProblem(path, message))


CONTAINERLAB_SUFFIXES = (".clab.yml", ".clab.yaml")


def is_containerlab_file(source: str) -> bool:
    return source.endswith(CONTAINERLAB_SUFFIXES)


def build_plan(topo: Topology, source: str, runtime: str | None = None) -> tuple[Plan | None, list[PlanProblem]]:
    """Resolve `topo` into a Plan, or return the problems that prevent it."""
    out = _Collector()
    body = topo.topology
    names = list(body.nodes)

    for kind in body.kinds:
        if kind not in NODE_KINDS:
            out.add(("topology", "kinds", kind), f"unknown kind {kind!r}; valid: {', '.join(NODE_KINDS)}")

    settings: dict[str, dict[str, Any]] = {}
    bad_kind_sources: set[tuple] = set()
    for name, node in body.nodes.items():
        path = ("topology", "nodes", name)
        if not NODE_NAME.match(name):
            out.add(path, f"{name!r} is not a node name: use 1-15 lowercase letters, digits or '-', "
                          "starting and ending with a letter or digit")
        # containerlab: a group not under `groups:` is only a label (its graph and inventory use it);
        # labkit's own files are strict about it, as about every key, so a typo cannot pass silently
        unknown_group = bool(node.group) and node.group not in body.groups and not is_containerlab_file(source)
        if unknown_group:
            valid = ", ".join(body.groups) or "none defined"
            out.add(path + ("group",), f"unknown group {node.group!r}; defined groups: {valid}")
        merged = effective_settings(body, node)
        kind = merged.get("kind")
        if kind is None:
            if not unknown_group:  # else the group is the one thing to fix
                out.add(path, f"no kind given (here, in its group or in defaults); valid: {', '.join(NODE_KINDS)}")
        elif kind not in NODE_KINDS:
            # name the level the kind came from, once: a bad kind in defaults is one mistake, not one per node
            group = body.groups.get(node.group or "")
            source = (path if node.kind else ("topology", "groups", node.group) if group and group.kind
                      else ("topology", "defaults")) + ("kind",)
            if source not in bad_kind_sources:
                bad_kind_sources.add(source)
                out.add(source, f"unknown kind {kind!r}; valid: {', '.join(NODE_KINDS)}")
        settings[name] = merged

    cluster = _cluster_plan(topo, out)
    if cluster is None and any(s.get("kind") == "k8s-node" for s in settings.values()):
        first = next(n for n, s in settings.items() if s.get("kind") == "k8s-node")
        out.add(("topology", "nodes", first, "kind"), "kind k8s-node needs a 'cluster:' section "
                                                       "(e.g. cluster: {pod-cidr: 10.244.0.0/16}); or use kind linux")
    has_mgmt = topo.mgmt is not None or cluster is not None

    # Interfaces from links, with per-endpoint addresses.
    ifaces: dict[str, dict[str, dict[str, Any]]] = {n: {} for n in names}
    links: list[LinkPlan] = []
    subnets: list[tuple[ipaddress.IPv4Network, tuple, set[str]]] = []
    addresses: dict[ipaddress.IPv4Address, tuple] = {}
    for li, link in enumerate(body.links):
        lpath = ("topology", "links", li)
        ends = []
        if link.ipv4 and any(ep.ipv4 for ep in link.endpoints):
            out.add(lpath + ("ipv4",), "give addresses either on the link or on its endpoints, not both")
        for ei, ep in enumerate(link.endpoints):
            epath = lpath + ("endpoints", ei)
            if ep.node not in body.nodes:
                out.add(epath, f"link to unknown node {ep.node!r}; nodes: {', '.join(names)}")
                continue
            if not IFNAME.match(ep.interface):
                out.add(epath, f"interface name {ep.interface!r} ({len(ep.interface)} characters) is invalid: "
                               "use 1-15 letters, digits, '_', '.' or '-', starting with a letter or digit")
                continue
            if has_mgmt and ep.interface == MGMT_IFNAME and settings[ep.node].get("kind") != "bridge":
                out.add(epath, f"interface {MGMT_IFNAME} of node {ep.node!r} is the mgmt interface; "
                               "use eth1 and up for links")
                continue
            if ep.interface in ifaces[ep.node]:
                other = ifaces[ep.node][ep.interface]["path"]
                where = "the other end of this link" if other[:3] == lpath else _fmt(other)
                out.add(epath, f"interface {ep.node}:{ep.interface} is already used by {where}; "
                               "every link end needs its own interface")
                continue
            address = ep.ipv4 or (link.ipv4[ei] if link.ipv4 else None)
            if address is not None and settings[ep.node].get("kind") == "bridge":
                out.add(epath, f"node {ep.node!r} is a bridge: its ports carry no address; "
                               "remove ipv4 here and address the node on the other end")
                address = None
            ifaces[ep.node][ep.interface] = {"address": address, "mtu": ep.mtu or link.mtu, "path": epath}
            ends.append((ep, address, epath))
        if len(ends) == 2:
            (ea, _, _), (eb, _, _) = ends
            ifaces[ea.node][ea.interface]["peer"] = (eb.node, eb.interface)
            ifaces[eb.node][eb.interface]["peer"] = (ea.node, ea.interface)
            links.append(LinkPlan(LinkEnd(ea.node, ea.interface), LinkEnd(eb.node, eb.interface), link.mtu))
            nets = {a.network for _, a, _ in ends if a is not None}
            if len(nets) == 2:
                out.add(lpath + (("ipv4",) if link.ipv4 else ("endpoints", 1)),
                        f"the two ends are in different subnets ({' and '.join(map(str, sorted(nets)))}); "
                        "a veth link is one subnet: give both ends addresses in it")
        bridges = {ep.node for ep, _, _ in ends if settings[ep.node].get("kind") == "bridge"}
        for _, address, epath in ends:
            if address is None:
                continue
            if address.network.prefixlen < 31 and address.ip in (
                address.network.network_address, address.network.broadcast_address
            ):
                which = "network" if address.ip == address.network.network_address else "broadcast"
                out.add(epath, f"{address} is the {which} "
                               f"address of its subnet; use a host address inside {address.network}")
            if address.ip in addresses:
                out.add(epath, f"address {address.ip} is already used at {_fmt(addresses[address.ip])}; "
                               "every address must be unique")
            addresses.setdefault(address.ip, epath)
            subnets.append((address.network, epath, bridges))

    _check_overlaps(subnets, out)

    mgmt = None
    mgmt_ips: dict[str, IPv4Interface] = {}
    if not has_mgmt:
        for name, node in body.nodes.items():
            if node.mgmt_ipv4 is not None:
                out.add(("topology", "nodes", name, "mgmt-ipv4"),
                        "there is no mgmt network for this address: add a 'mgmt:' section "
                        "(e.g. mgmt: {ipv4-subnet: 172.31.0.0/24}) or remove mgmt-ipv4")
    link_subnets: dict[tuple, tuple] = {}  # (subnet, link) -> its first endpoint: one message per link
    for net, path, _ in subnets:
        link_subnets.setdefault((net, path[:3]), path)
    if has_mgmt:
        mgmt, mgmt_ips = _mgmt_plan(topo, settings, out)
        for (net, _), path in link_subnets.items():
            if mgmt and net.overlaps(mgmt.subnet):
                out.add(path, f"subnet {net} overlaps the mgmt subnet {mgmt.subnet}; use a subnet outside it")
    if cluster is not None:
        for (net, _), path in link_subnets.items():
            for what, cidr in (("pod-cidr", cluster.pod_cidr), ("service-cidr", cluster.service_cidr)):
                if net.overlaps(cidr):
                    out.add(path, f"subnet {net} overlaps the cluster {what} {cidr}; use a subnet outside it")
        if mgmt:
            for what, cidr in (("pod-cidr", cluster.pod_cidr), ("service-cidr", cluster.service_cidr)):
                if mgmt.subnet.overlaps(cidr):
                    out.add(("mgmt", "ipv4-subnet"), f"mgmt subnet {mgmt.subnet} overlaps the cluster {what} {cidr}")

    pod_cidrs = _pod_cidrs(cluster, settings, out)

    nodes: list[NodePlan] = []
    for index, name in enumerate(names):
        s = settings[name]
        path = ("topology", "nodes", name)
        interfaces = []
        if name in mgmt_ips:
            interfaces.append(Interface(MGMT_IFNAME, (mgmt_ips[name],)))
        for ifname, info in ifaces[name].items():
            peer = info.get("peer", (None, None))
            addrs = (info["address"],) if info["address"] is not None else ()
            interfaces.append(Interface(ifname, addrs, info["mtu"], peer[0], peer[1]))
        connected = [a.network for i in interfaces for a in i.addresses]
        routes = []
        for ri, r in enumerate(s.get("routes", [])):
            via = str(r["via"]) if r.get("via") is not None else None
            if via is None and r.get("dev") is None:
                out.add(path + ("routes", ri), "a route needs 'via' or 'dev'")
            if via is not None and not any(ipaddress.IPv4Address(via) in net for net in connected):
                where = ", ".join(map(str, connected)) or "none"
                out.add(path + ("routes", ri, "via"),
                        f"gateway {via} is outside every subnet of node {name!r} (its subnets: {where})")
            if r.get("dev") is not None and r["dev"] not in {i.name for i in interfaces}:
                have = ", ".join(i.name for i in interfaces) or "none"
                out.add(path + ("routes", ri, "dev"), f"node {name!r} has no interface {r['dev']!r} "
                                                      f"(its interfaces: {have})")
            routes.append(Route(r["dst"], via, r.get("dev")))
        sysctls = []
        defaults = {"net.ipv4.ip_forward": 1} if s.get("kind") == "k8s-node" else {}
        for key, value in {**defaults, **s.get("sysctls", {})}.items():
            if not SYSCTL_KEY.match(key) or ".." in key:
                out.add(path + ("sysctls", key), f"{key!r} is not a sysctl name like net.ipv4.ip_forward")
            sysctls.append((key, str(value)))
        commands = []
        for ci, command in enumerate(s.get("exec", [])):
            try:
                commands.append(tuple(shlex.split(command)))
            except ValueError as exc:
                out.add(path + ("exec", ci), f"cannot split command {command!r}: {exc}; "
                                             "it is split like a shell would: close every quote")
        nodes.append(NodePlan(
            name=name, kind=s.get("kind", "linux"), index=index, netns=node_netns(topo.name, name),
            image=s.get("image"), interfaces=tuple(interfaces), routes=tuple(routes),
            sysctls=tuple(sysctls), exec=tuple(commands), mgmt_ipv4=mgmt_ips.get(name),
            pod_cidr=pod_cidrs.get(name),
        ))

    if out.problems:
        return None, out.problems
    plan = Plan(
        lab=topo.name, runtime=runtime or topo.runtime, source=source, nodes=tuple(nodes),
        links=tuple(links), mgmt=mgmt, cluster=cluster, expect=tuple(topo.expect),
    )
    return plan, []


def _check_overlaps(subnets: list[tuple[ipaddress.IPv4Network, tuple, set[str]]], out: _Collector) -> None:
    """Different subnets must not overlap; one subnet may span several links only through a bridge.

    Sorted sweep, not all pairs: a chain of a thousand links has two thousand subnets.
    """
    first_use: dict[ipaddress.IPv4Network, tuple[tuple, set[str]]] = {}
    reported: set[tuple] = set()  # (subnet, link): one message per link, not one per end
    for net, path, bridges in subnets:
        if net not in first_use:
            first_use[net] = (path, bridges)
            continue
        first_path, first_bridges = first_use[net]
        if path[:3] != first_path[:3] and not (bridges & first_bridges) and (net, path[:3]) not in reported:
            reported.add((net, path[:3]))
            out.add(path, f"subnet {net} is also used by {_fmt(first_path)}; one subnet spans several links "
                          "only through a bridge node")
    widest: tuple[ipaddress.IPv4Network, tuple] | None = None
    for net in sorted(first_use, key=lambda n: (int(n.network_address), n.prefixlen)):
        if widest and int(net.network_address) <= int(widest[0].broadcast_address):
            out.add(first_use[net][0], f"subnet {net} overlaps {widest[0]} of {_fmt(widest[1])}; "
                                       "subnets of different links must not overlap")
        if widest is None or int(net.broadcast_address) > int(widest[0].broadcast_address):
            widest = (net, first_use[net][0])


def _fmt(path: tuple) -> str:
    return dotted(path)  # the same spelling as the field of a message: topology.links[0].endpoints[1]


def _cluster_plan(topo: Topology, out: _Collector) -> ClusterPlan | None:
    c = topo.cluster
    if c is None:
        return None
    if c.pod_cidr.overlaps(c.service_cidr):
        out.add(("cluster", "service-cidr"), f"service-cidr {c.service_cidr} overlaps pod-cidr {c.pod_cidr}; "
                                             "they must not overlap (e.g. 10.96.0.0/16 and 10.244.0.0/16)")
    if c.pod_cidr.prefixlen > 24:
        out.add(("cluster", "pod-cidr"), f"pod-cidr {c.pod_cidr} is too small: each node takes a /24, "
                                         "so use /24 or larger (e.g. 10.244.0.0/16)")
    if c.dns.ip not in c.service_cidr:
        out.add(("cluster", "dns", "ip"), f"dns ip {c.dns.ip} is outside service-cidr {c.service_cidr}; "
                                          f"use an address inside it (e.g. {c.service_cidr.network_address + 10})")
    return ClusterPlan(
        domain=c.domain, pod_cidr=c.pod_cidr, service_cidr=c.service_cidr, backend=c.cni.backend,
        mtu=c.cni.mtu, dns_ip=c.dns.ip, dns_replicas=c.dns.replicas,
        dns_upstreams=tuple(str(u) for u in c.dns.upstreams),
        dns_workers=None if c.dns.workers == "auto" else c.dns.workers,
    )


def _mgmt_plan(topo: Topology, settings: dict[str, dict], out: _Collector
               ) -> tuple[MgmtPlan | None, dict[str, IPv4Interface]]:
    from labkit.topology.schema import Mgmt

    m = topo.mgmt or Mgmt()
    subnet = m.ipv4_subnet
    hosts = iter(subnet.hosts())  # a list, not an iterator, for /31 and /32
    gateway_ip = next(hosts, None)
    if gateway_ip is None:
        out.add(("mgmt", "ipv4-subnet"), f"mgmt subnet {subnet} has no room for addresses")
        return None, {}
    taken = {gateway_ip}
    explicit: dict[str, ipaddress.IPv4Address] = {}
    for name, node in topo.topology.nodes.items():
        if node.mgmt_ipv4 is None:
            continue
        path = ("topology", "nodes", name, "mgmt-ipv4")
        if settings[name].get("kind") == "bridge":
            out.add(path, f"node {name!r} is a bridge: it has no mgmt interface; remove mgmt-ipv4")
            continue
        first_free = f"use a host address of {subnet} from {gateway_ip + 1} up"
        if node.mgmt_ipv4 not in subnet:
            out.add(path, f"address {node.mgmt_ipv4} is outside the mgmt subnet {subnet}; {first_free}")
        elif node.mgmt_ipv4 in (subnet.network_address, subnet.broadcast_address):
            which = "network" if node.mgmt_ipv4 == subnet.network_address else "broadcast"
            out.add(path, f"address {node.mgmt_ipv4} is the {which} address of the mgmt subnet; {first_free}")
        elif node.mgmt_ipv4 == gateway_ip:
            out.add(path, f"address {node.mgmt_ipv4} is the mgmt gateway (the bridge's own address); {first_free}")
        elif node.mgmt_ipv4 in taken:
            owner = next(n for n, ip in explicit.items() if ip == node.mgmt_ipv4)
            out.add(path, f"address {node.mgmt_ipv4} is already the mgmt address of node {owner!r}")
        taken.add(node.mgmt_ipv4)
        explicit[name] = node.mgmt_ipv4
    ips: dict[str, IPv4Interface] = {}
    for name, s in settings.items():
        if s.get("kind") == "bridge":
            continue
        ip = explicit.get(name)
        if ip is None:
            ip = next((h for h in hosts if h not in taken), None)
            if ip is None:
                need = sum(1 for v in settings.values() if v.get("kind") != "bridge")
                room = subnet.num_addresses - (2 if subnet.prefixlen < 31 else 0) - 1  # less the gateway
                out.add(("mgmt", "ipv4-subnet"), f"mgmt subnet {subnet} has room for {room} node address(es) "
                                                 f"besides the gateway, but {need} nodes need one; "
                                                 "use a larger subnet (e.g. a /24)")
                break
            taken.add(ip)
        ips[name] = IPv4Interface(f"{ip}/{subnet.prefixlen}")
    plan = MgmtPlan(
        netns=mgmt_netns(topo.name), bridge=MGMT_BRIDGE, subnet=subnet,
        gateway=IPv4Interface(f"{gateway_ip}/{subnet.prefixlen}"), host_access=m.host_access,
        host_ifname=host_link_name(topo.name),
    )
    return plan, ips


def _pod_cidrs(cluster: ClusterPlan | None, settings: dict[str, dict], out: _Collector
               ) -> dict[str, ipaddress.IPv4Network]:
    if cluster is None or cluster.pod_cidr.prefixlen > 24:
        return {}
    k8s_nodes = [n for n, s in settings.items() if s.get("kind") == "k8s-node"]
    subnets = cluster.pod_cidr.subnets(new_prefix=24)
    result = {}
    for name in k8s_nodes:
        net = next(subnets, None)
        if net is None:
            out.add(("cluster", "pod-cidr"),
                    f"pod-cidr {cluster.pod_cidr} has fewer /24s than k8s-nodes ({len(k8s_nodes)})")
            break
        result[name] = net
    return result
