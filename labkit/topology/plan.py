"""The plan: a fully resolved, immutable description of a lab, computed before anything exists.

Every namespace name, interface name and address is decided here, and every
semantic check runs here, so `up` either builds exactly this or nothing.
`build_plan` is a list of named passes (`PASSES`), run top to bottom over one
`Draft`; each pass resolves one part of the lab and collects its problems (never
raising one by one), each with the path of the topology key it is about, so the
message can name its line.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from labkit.families import Family, IPAddress, IPNetwork, nth_host
from labkit.topology import clab, containers, kinds
from labkit.topology.bgp import BgpPlan, plan_bgp
from labkit.topology.containers import ContainerSettings
from labkit.topology.expand import effective_settings, group_of
from labkit.topology.impairment import Impairment
from labkit.topology.names import CLAB_NODE_NAME, lab_key, node_key
from labkit.yamldoc import dotted
from labkit.topology.schema import DEFAULT_IPV6_SUBNET, IFNAME, LINK_TYPES, NODE_NAME, Mgmt, Topology
from labkit.topology.sysctls import namespaced_problem

if TYPE_CHECKING:
    from labkit.k8s import Workloads
    from labkit.k8s.allocate import Allocation
    from labkit.topology.expect import Expect

IPv4Interface = ipaddress.IPv4Interface
IPv6Interface = ipaddress.IPv6Interface
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
FAMILIES = (4, 6)
SYSCTL_KEY = re.compile(r"^[a-z0-9_]+(?:[./][a-z0-9_-]+)+$")
MGMT_IFNAME = "eth0"
MGMT_BRIDGE = "mgmt0"
BRIDGE_IFNAME = "br0"
NETNS_NAME_MAX = 255  # a namespace is a file in /run/netns: NAME_MAX bytes


def netns_prefix(lab: str) -> str:
    """Every namespace of lab `lab` starts with this; '.' cannot occur in a lab name."""
    return f"lk-{lab}."


def node_netns(lab: str, node: str) -> str:
    return f"{netns_prefix(lab)}{node}"


def pod_netns(lab: str, namespace: str, pod: str) -> str:
    """Pods: `lk-<lab>.<ns>.<pod>`; nodes have one dot after the prefix, pods two."""
    return f"{netns_prefix(lab)}{namespace}.{pod}"


def mgmt_netns(lab: str) -> str:
    return f"{netns_prefix(lab)}_mgmt"


def host_link_name(lab: str) -> str:
    """The host's end of the mgmt network when `host-access` is on (<= 15 chars)."""
    return f"lk-{lab}"


def pod_capacity(pod_cidr: IPNetwork) -> int:
    """How many pods a node's podCIDR holds: its host addresses less the gateway (the CNI's IPAM)."""
    hosts = pod_cidr.num_addresses - (2 if pod_cidr.prefixlen < 31 else 0)
    return max(hosts - 1, 0)


@dataclass(frozen=True)
class Route:
    dst: str  # prefix or "default"
    via: str | None
    dev: str | None


@dataclass(frozen=True)
class Interface:
    name: str
    addresses: tuple[IPInterface, ...] = ()  # IPv4 ones first, then IPv6 ones
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
    pod_cidr: IPNetwork | None = None  # the preferred family's of pod_cidrs
    key: str = ""  # the kernel-safe name (labkit.topology.names): namespace suffix, mgmt bridge port
    container: ContainerSettings | None = None  # containerlab's container keys (the docker runtime's)
    hosts: tuple[tuple[str, str], ...] = ()  # extra /etc/hosts entries (name, IPv4): `hosts:`
    mgmt_ipv6: ipaddress.IPv6Interface | None = None
    pod_cidrs: tuple[IPNetwork, ...] = ()  # one per cluster family, in the cluster's order

    def node_ips(self, families: tuple[Family, ...] = (4,)) -> tuple[str, ...]:
        """The node's InternalIPs (its mgmt addresses) of `families`, in that order; a family it lacks is left out."""
        by = {4: self.mgmt_ipv4, 6: self.mgmt_ipv6}
        return tuple(str(by[f].ip) for f in families if by[f] is not None)

    @property
    def port(self) -> str:
        """The node's port on the mgmt bridge (named by its key: a user's name may not fit a kernel's)."""
        return self.key or self.name

    @property
    def kind_info(self) -> kinds.NodeKind:
        """What this node's kind is (a cluster node, an L2 bridge, ...): ask this, not the kind's name."""
        return kinds.get(self.kind)

    def interface(self, name: str) -> Interface:
        return next(i for i in self.interfaces if i.name == name)

    @property
    def has_ipv6(self) -> bool:
        """Whether any of its interfaces carries an IPv6 address (then labkit sets it up for IPv6)."""
        return any(a.version == 6 for i in self.interfaces for a in i.addresses)


@dataclass(frozen=True)
class LinkEnd:
    node: str
    ifname: str
    impairment: Impairment | None = None  # tc keys of the link and this endpoint (labkit.impair applies them)


@dataclass(frozen=True)
class LinkPlan:
    a: LinkEnd
    b: LinkEnd
    mtu: int | None = None


@dataclass(frozen=True)
class ExternalLink:
    """containerlab's one-ended links: `host` (a veth whose other end is `host_ifname` in the host),
    `mgmt-net` (its other end is a port of the mgmt bridge) and `macvlan` (a macvlan of the host's
    `host_ifname`, moved into the node as `ifname`)."""

    type: str
    node: str
    ifname: str
    host_ifname: str
    mode: str = "bridge"  # macvlan
    mtu: int | None = None


@dataclass(frozen=True)
class MgmtPlan:
    netns: str
    bridge: str
    subnet: ipaddress.IPv4Network
    gateway: IPv4Interface  # the bridge's own address; the host's when host-access is on
    host_access: bool
    host_ifname: str
    subnet6: ipaddress.IPv6Network | None = None  # the mgmt network's IPv6 (mgmt.ipv6-subnet, or a cluster's default)
    gateway6: ipaddress.IPv6Interface | None = None


@dataclass(frozen=True)
class ClusterPlan:
    """A cluster's settings, resolved. `pod_cidrs`, `service_cidrs` and `dns_ips` hold one entry per
    family, the preferred family first (labkit.families); `pod_cidr`, `service_cidr` and `dns_ip`
    are the preferred family's, for code that needs one address."""

    domain: str
    pod_cidr: IPNetwork
    service_cidr: IPNetwork
    backend: str
    mtu: int | None
    dns_ip: IPAddress
    dns_replicas: int
    dns_upstreams: tuple[str, ...]
    dns_workers: int | None = None    # DNS server processes per replica; None: one per two CPUs
    mode: str = kinds.DEFAULT_CNI_MODE  # how pods attach to their node: ptp (routed veths) or bridge (cni0)
    masquerade: bool = True  # pod traffic leaving the cluster pod CIDR takes the node's address
    bgp: BgpPlan | None = None  # backend bgp: the speakers' AS, mesh or route reflectors, external peers
    ingress_replicas: int | None = None  # cluster.ingress: the controller runs even without Ingress objects
    ingress_annotations: tuple[tuple[str, str], ...] = ()  # cluster.ingress.annotations: on the proxy's Service
    stand_ins: bool | None = None     # cluster.stand-ins; None: auto (labkit.k8s.standin)
    pod_cidrs: tuple[IPNetwork, ...] = ()
    service_cidrs: tuple[IPNetwork, ...] = ()
    dns_ips: tuple[IPAddress, ...] = ()
    node_mask_v6: int = 64  # each node's IPv6 podCIDR prefix length

    @property
    def families(self) -> tuple[Family, ...]:
        """(4,), (6,), (4, 6) or (6, 4): the cluster's families, the preferred one first."""
        return tuple(n.version for n in self.pod_cidrs) or (self.pod_cidr.version,)

    @property
    def dual_stack(self) -> bool:
        return len(self.families) == 2


@dataclass(frozen=True)
class Plan:
    lab: str
    runtime: str
    source: str
    nodes: tuple[NodePlan, ...]
    links: tuple[LinkPlan, ...]
    mgmt: MgmtPlan | None = None
    cluster: ClusterPlan | None = None
    # A cluster's manifests (the user's and the system's), checked; None without a cluster.
    workloads: Workloads | None = None
    # Pod placement, ClusterIPs and NodePorts, decided once when the plan is loaded.
    allocation: Allocation | None = None
    expects: tuple[Expect, ...] = ()
    external_links: tuple[ExternalLink, ...] = ()
    title: str = ""  # the lab's name as the file gives it (lab is the name labkit runs it under)
    notes: tuple[str, ...] = ()  # what `validate` and `up` say besides: keys the runtime leaves without effect

    def node(self, name: str) -> NodePlan:
        return next(n for n in self.nodes if n.name == name)

    @property
    def cluster_nodes(self) -> tuple[NodePlan, ...]:
        """The nodes that join the cluster (kind k8s-node), in topology order."""
        return tuple(n for n in self.nodes if n.kind_info.cluster_node)

    @property
    def pod_hosts(self) -> tuple[NodePlan, ...]:
        """The nodes pods run on: cluster nodes, and container hosts (docker-host) for pods naming them."""
        return tuple(n for n in self.nodes if n.kind_info.runs_pods)

    @property
    def netns_prefix(self) -> str:
        return netns_prefix(self.lab)

    @property
    def impairments(self) -> tuple[LinkEnd, ...]:
        """The link ends the topology impairs (`delay`, `loss`, `rate`, ...), in link order."""
        return tuple(end for link in self.links for end in (link.a, link.b) if end.impairment is not None)


@dataclass
class PlanProblem:
    path: tuple[str | int, ...]
    message: str
    hint: str = ""  # what would be valid, appended to the message

    @property
    def text(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


CONTAINERLAB_SUFFIXES = (".clab.yml", ".clab.yaml")


def is_containerlab_file(source: str) -> bool:
    return source.endswith(CONTAINERLAB_SUFFIXES)


# ---------------------------------------------------------------- the passes


@dataclass
class _Iface:
    """A link end while links are resolved: its addresses (one per family at most), MTU, where it was
    written, its peer."""

    addresses: tuple[IPInterface, ...]
    mtu: int | None
    path: tuple
    peer: tuple[str, str] | None = None


@dataclass
class Draft:
    """What the passes know so far; each pass reads what earlier ones filled in and adds its part."""

    topo: Topology
    source: str
    runtime: str | None
    problems: list[PlanProblem] = field(default_factory=list)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # node -> its inherited settings
    cluster: ClusterPlan | None = None
    ifaces: dict[str, dict[str, _Iface]] = field(default_factory=dict)  # node -> ifname -> link end
    links: list[LinkPlan] = field(default_factory=list)
    # every addressed link end, per address: (its subnet, its path, the bridge nodes on its link)
    subnets: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, tuple, set[str]]] = field(default_factory=list)
    mgmt: MgmtPlan | None = None
    mgmt_ips: dict[str, IPv4Interface] = field(default_factory=dict)
    mgmt_ips6: dict[str, IPv6Interface] = field(default_factory=dict)
    pod_cidrs: dict[str, tuple[IPNetwork, ...]] = field(default_factory=dict)  # node -> one per cluster family
    nodes: list[NodePlan] = field(default_factory=list)

    keys: dict[str, str] = field(default_factory=dict)  # node -> its kernel-safe name
    external: list[ExternalLink] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped_ports: list[str] = field(default_factory=list)  # containerlab ports labkit does not forward

    def add(self, path: tuple[str | int, ...], message: str, hint: str = "") -> None:
        self.problems.append(PlanProblem(path, message, hint))

    @property
    def lab(self) -> str:
        """The name the lab runs under: the file's, or its mapping when it breaks labkit's rule."""
        return lab_key(self.topo.name)

    @property
    def body(self):
        return self.topo.topology

    @property
    def has_mgmt(self) -> bool:
        """A mgmt network is given, or implied by a cluster or by a `mgmt-net` link."""
        return (self.topo.mgmt is not None or self.topo.cluster is not None
                or any(_link_type(link) == "mgmt-net" for link in self.body.links))

    def kind_of(self, node: str) -> kinds.NodeKind | None:
        """The node's kind after inheritance; None while unknown (its problem is reported once)."""
        name = self.settings.get(node, {}).get("kind")
        return kinds.get(name) if name in kinds.REGISTRY else None

    def is_bridge(self, node: str) -> bool:
        kind = self.kind_of(node)
        return kind is not None and kind.l2_bridge

    def link_subnets(self) -> dict[tuple, tuple]:
        """(subnet, link) -> its first endpoint's path: one message per link, not one per end."""
        found: dict[tuple, tuple] = {}
        for net, path, _ in self.subnets:
            found.setdefault((net, path[:3]), path)
        return found


def check_kind_definitions(d: Draft) -> None:
    """`topology.kinds:` only defines settings for kinds the registry has (or that a node is of:
    then that node's kind is the one message)."""
    used = {effective_settings(d.body, node).get("kind") for node in d.body.nodes.values()}
    for name in d.body.kinds:
        if name not in kinds.REGISTRY and name not in used:
            d.add(("topology", "kinds", name), str(kinds.UnknownKind(name, kinds.names())))


def resolve_nodes(d: Draft) -> None:
    """Node names, groups, and every setting inherited node -> group -> kind -> defaults."""
    body = d.body
    unknown: dict[str, tuple[tuple, list[str]]] = {}  # kind -> where it is first set, the nodes of it
    for name, node in body.nodes.items():
        path = ("topology", "nodes", name)
        if not NODE_NAME.match(name) and not CLAB_NODE_NAME.match(name):
            d.add(path, f"{name!r} is not a node name: use 1-64 letters, digits, '-', '_' or '.', "
                        "starting with a letter or digit (containerlab's rule)")
        group = group_of(body, node)
        # containerlab: a group not under `groups:` is only a label (its graph and inventory use it);
        # labkit's own files are strict about it, as about every key, so a typo cannot pass silently
        unknown_group = bool(group) and group not in body.groups and not is_containerlab_file(d.source)
        if unknown_group:
            valid = ", ".join(body.groups) or "none defined"
            where = path + ("group",) if node.group else ("topology", "defaults", "group")
            d.add(where, f"unknown group {group!r}; defined groups: {valid}")
        merged = effective_settings(body, node)
        kind = merged.get("kind")
        if kind is None:
            if not unknown_group:  # else the group is the one thing to fix
                d.add(path, "no kind given (here, in its group or in defaults)", f"valid: {', '.join(kinds.names())}")
        elif kind not in kinds.REGISTRY:
            # name the level the kind came from, once: a bad kind in defaults is one mistake, not one per node
            grp = body.groups.get(group or "")
            source = (path if node.kind else ("topology", "groups", group) if grp and grp.kind
                      else ("topology", "defaults")) + ("kind",)
            unknown.setdefault(kind, (source, []))[1].append(name)
        elif kinds.get(kind).cluster_node and not NODE_NAME.match(name):
            d.add(path, f"{name!r} is not a name a Kubernetes node can have: a {kind} is named by 1-15 "
                        "lowercase letters, digits or '-', starting and ending with a letter or digit "
                        "(pods name it in spec.nodeName)")
        d.settings[name] = merged
        d.keys[name] = node_key(name)
    for kind, (source, names) in unknown.items():
        d.add(source, clab.unsupported_kind(kind, names))
    owners: dict[str, str] = {}
    for name, key in d.keys.items():
        if key in owners and owners[key] != name:
            d.add(("topology", "nodes", name), f"node names {owners[key]!r} and {name!r} map to the same "
                                               f"kernel name {key!r}; rename one of them")
        owners.setdefault(key, name)


POD_MASK_V4 = 24  # each node's IPv4 podCIDR (kube-controller-manager's --node-cidr-mask-size-ipv4)
CLUSTER_KEYS = {"pod": ("cluster", "pod-cidr"), "service": ("cluster", "service-cidr")}


def plan_cluster(d: Draft) -> None:
    """`cluster:`: its CIDRs fit together, family by family, and the DNS addresses are service addresses."""
    c = d.topo.cluster
    if c is None:
        return
    pods, services = c.pod_cidrs, c.service_cidrs
    pod_families, service_families = [n.version for n in pods], [n.version for n in services]
    if pod_families != service_families:
        d.add(CLUSTER_KEYS["service"],
              f"service-cidr is {_families_text(services)} but pod-cidr is {_families_text(pods)}; give both the "
              "same families in the same order (e.g. pod-cidr: 10.244.0.0/16,fd00:10:244::/56 and "
              "service-cidr: 10.96.0.0/16,fd00:10:96::/112)")
    for pod in pods:
        for svc in services:
            if pod.overlaps(svc):
                example = ("10.96.0.0/16 and 10.244.0.0/16" if pod.version == 4
                           else "fd00:10:96::/112 and fd00:10:244::/56")
                d.add(CLUSTER_KEYS["service"], f"service-cidr {svc} overlaps pod-cidr {pod}; they must not "
                                               f"overlap (e.g. {example})")
        mask = POD_MASK_V4 if pod.version == 4 else c.node_mask_v6
        if pod.prefixlen > mask:
            d.add(CLUSTER_KEYS["pod"], f"pod-cidr {pod} is too small: each node takes a /{mask}, so use /{mask} "
                                       "or larger (e.g. " + ("10.244.0.0/16)" if pod.version == 4 else
                                                             "fd00:10:244::/56, or set node-mask-v6)"))
    for svc in services:
        if svc.version == 6 and svc.prefixlen < 108:
            # the API server refuses IPv6 service CIDRs larger than /108 (its allocator's bitmap size)
            d.add(CLUSTER_KEYS["service"], f"service-cidr {svc} is too large: an IPv6 service CIDR is /108 or "
                                           "smaller, as the API server requires (e.g. fd00:10:96::/112)")
    dns_ips = _dns_ips(d, c)
    d.cluster = ClusterPlan(
        domain=c.domain, pod_cidr=pods[0], service_cidr=services[0], backend=c.cni.backend,
        mtu=c.cni.mtu, dns_ip=dns_ips[0] if dns_ips else nth_host(services[0], 10), dns_replicas=c.dns.replicas,
        dns_upstreams=tuple(str(u) for u in c.dns.upstreams),
        dns_workers=None if c.dns.workers == "auto" else c.dns.workers, mode=c.cni.mode, masquerade=c.cni.masquerade,
        ingress_replicas=c.ingress.replicas if c.ingress else None,
        ingress_annotations=tuple(c.ingress.annotations.items()) if c.ingress else (),
        stand_ins=None if c.stand_ins == "auto" else c.stand_ins,
        pod_cidrs=tuple(pods), service_cidrs=tuple(services), dns_ips=dns_ips, node_mask_v6=c.node_mask_v6,
    )


def _families_text(networks) -> str:
    return " and ".join(f"IPv{n.version} ({n})" for n in networks)


def _dns_ips(d: Draft, c) -> tuple[IPAddress, ...]:
    """The DNS Service's address per service CIDR: `dns.ip` for its family, else the CIDR's 10th address."""
    given = c.dns.ip
    if given is not None and given.version not in [n.version for n in c.service_cidrs]:
        d.add(("cluster", "dns", "ip"), f"dns ip {given} is IPv{given.version} but service-cidr has no "
                                        f"IPv{given.version} range ({', '.join(map(str, c.service_cidrs))})")
    found = []
    for svc in c.service_cidrs:
        if given is not None and given.version == svc.version:
            if given not in svc:
                d.add(("cluster", "dns", "ip"), f"dns ip {given} is outside service-cidr {svc}; "
                                                f"use an address inside it (e.g. {nth_host(svc, 10)})")
            found.append(given)
        elif svc.num_addresses > 10:
            found.append(nth_host(svc, 10))
        else:
            d.add(CLUSTER_KEYS["service"], f"service-cidr {svc} is too small: it needs room for the DNS "
                                           "Service's address (its 10th)")
    return tuple(found)


def plan_bgp_settings(d: Draft) -> None:
    """`cluster.cni.bgp` (labkit.topology.bgp): after the mgmt pass, which gives peers their addresses."""
    if d.cluster is not None:
        bgp = plan_bgp(d)
        if bgp is not None:
            d.cluster = dataclasses.replace(d.cluster, bgp=bgp)


def check_cluster_nodes(d: Draft) -> None:
    """A node of a cluster kind needs a `cluster:` section."""
    if d.cluster is not None:
        return
    first = next((n for n in d.settings if (k := d.kind_of(n)) is not None and k.runs_pods), None)
    if first is not None:
        kind = d.settings[first]["kind"]
        d.add(("topology", "nodes", first, "kind"), f"kind {kind} needs a 'cluster:' section "
                                                    "(e.g. cluster: {pod-cidr: 10.244.0.0/16}); or use kind linux")


PSEUDO_NODES = ("host", "mgmt-net", "macvlan")  # containerlab's brief form: "host:veth0", "macvlan:enp0s3"


def _link_type(link, nodes: dict | None = None) -> str:
    """The link's type: as given, or for a brief veth link with one end on containerlab's pseudo
    node `host`, `mgmt-net` or `macvlan` (not a node of the file), that pseudo node's type."""
    if link.type != "veth" or not link.endpoints:
        return link.type
    pseudo = [ep.node for ep in link.endpoints if ep.node in PSEUDO_NODES and ep.node not in (nodes or {})]
    return pseudo[0] if len(pseudo) == 1 else link.type


def _claim_end(d: Draft, ep, epath: tuple, lpath: tuple) -> bool:
    """A link end on a known node and a free, valid interface name; its problem reported otherwise."""
    names = list(d.body.nodes)
    if ep.node not in d.body.nodes:
        d.add(epath, f"link to unknown node {ep.node!r}; nodes: {', '.join(names)}")
        return False
    if not IFNAME.match(ep.interface):
        d.add(epath, f"interface name {ep.interface!r} ({len(ep.interface)} characters) is invalid: "
                     "use 1-15 letters, digits, '_', '.' or '-', starting with a letter or digit")
        return False
    if d.has_mgmt and ep.interface == MGMT_IFNAME and not d.is_bridge(ep.node):
        d.add(epath, f"interface {MGMT_IFNAME} of node {ep.node!r} is the mgmt interface; "
                     "use eth1 and up for links")
        return False
    if ep.interface in d.ifaces[ep.node]:
        other = d.ifaces[ep.node][ep.interface].path
        where = "the other end of this link" if other[:3] == lpath else _fmt(other)
        d.add(epath, f"interface {ep.node}:{ep.interface} is already used by {where}; "
                     "every link end needs its own interface")
        return False
    return True


def _check_address(d: Draft, address, epath: tuple, bridges: set[str], addresses: dict) -> None:
    net = address.network
    if address.version == 4 and net.prefixlen < 31 and address.ip in (net.network_address, net.broadcast_address):
        which = "network" if address.ip == net.network_address else "broadcast"
        d.add(epath, f"{address} is the {which} "
                     f"address of its subnet; use a host address inside {address.network}")
    elif address.version == 6 and net.prefixlen < 127 and address.ip == net.network_address:
        d.add(epath, f"{address} is the Subnet-Router anycast address of its subnet (its first); "
                     f"use another address inside {net}, e.g. {net.network_address + 1}")
    if address.ip in addresses:
        d.add(epath, f"address {address.ip} is already used at {_fmt(addresses[address.ip])}; "
                     "every address must be unique")
    addresses.setdefault(address.ip, epath)
    d.subnets.append((address.network, epath, bridges))


def plan_links(d: Draft) -> None:
    """Every link end: a known node, a free interface name, an address that fits the link."""
    body = d.body
    names = list(body.nodes)
    d.ifaces = {n: {} for n in names}
    addresses: dict[ipaddress.IPv4Address, tuple] = {}
    host_names: dict[tuple[str, str], tuple] = {}  # (type, host-interface) -> where it is first used
    for li, link in enumerate(body.links):
        lpath = ("topology", "links", li)
        ltype = _link_type(link, body.nodes)
        if ltype not in LINK_TYPES:
            d.add(lpath + ("type",), clab.unsupported_link_type(ltype))
            continue
        if link.mode is not None and ltype != "macvlan":
            d.add(lpath + ("mode",), f"'mode' is for macvlan links; this link is of type {ltype!r}")
        if ltype != "veth":
            if not link.impairment().is_empty() or (link.endpoint and not link.endpoint.impairment().is_empty()):
                d.add(lpath, f"delay, loss, rate and the other tc keys are for veth links between nodes, not a "
                             f"{ltype} link; impair the node's interface with labkit netem")
            _plan_external(d, link, ltype, lpath, addresses, host_names)
            continue
        if link.endpoints is None:
            d.add(lpath, "a veth link needs 'endpoints', e.g. endpoints: [\"h1:eth1\", \"h2:eth1\"]")
            continue
        ends = []
        for family in FAMILIES:
            key = f"ipv{family}"
            if link.addresses(family) and any(ep.address(family) for ep in link.endpoints):
                d.add(lpath + (key,), "give addresses either on the link or on its endpoints, not both")
        for ei, ep in enumerate(link.endpoints):
            epath = lpath + ("endpoints", ei)
            if not _claim_end(d, ep, epath, lpath):
                continue
            found = _end_addresses(link, ep, ei)
            if found and d.is_bridge(ep.node):
                keys = " and ".join(f"ipv{a.version}" for a in found)
                d.add(epath, f"node {ep.node!r} is a bridge: its ports carry no address; "
                             f"remove {keys} here and address the node on the other end")
                found = ()
            _check_ipv6_mtu(d, found, ep.mtu or link.mtu, epath + ("mtu",) if ep.mtu else lpath + ("mtu",))
            d.ifaces[ep.node][ep.interface] = _Iface(found, ep.mtu or link.mtu, epath)
            ends.append((ep, found, epath))
        if len(ends) == 2:
            (ea, _, _), (eb, _, _) = ends
            d.ifaces[ea.node][ea.interface].peer = (eb.node, eb.interface)
            d.ifaces[eb.node][eb.interface].peer = (ea.node, ea.interface)
            impaired = [_impairment(d, link, ep, lpath + ("endpoints", i)) for i, ep in enumerate((ea, eb))]
            d.links.append(LinkPlan(LinkEnd(ea.node, ea.interface, impaired[0]),
                                    LinkEnd(eb.node, eb.interface, impaired[1]), link.mtu))
            for family in FAMILIES:
                nets = {a.network for _, found, _ in ends for a in found if a.version == family}
                if len(nets) == 2:
                    key = f"ipv{family}"
                    d.add(lpath + ((key,) if link.addresses(family) else ("endpoints", 1)),
                          f"the two ends are in different IPv{family} subnets "
                          f"({' and '.join(map(str, sorted(nets)))}); a veth link is one subnet per family: "
                          "give both ends addresses in it")
        bridges = {ep.node for ep, _, _ in ends if d.is_bridge(ep.node)}
        for _, found, epath in ends:
            for address in found:
                _check_address(d, address, epath, bridges, addresses)


IPV6_MIN_MTU = 1280  # RFC 8200: below it the kernel turns IPv6 off on the interface (its addresses go)


def _check_ipv6_mtu(d: Draft, found: tuple[IPInterface, ...], mtu: int | None, path: tuple) -> None:
    """An end with an IPv6 address needs IPv6's minimum MTU; one message per `mtu` key."""
    if mtu is None or mtu >= IPV6_MIN_MTU or not any(a.version == 6 for a in found):
        return
    message = (f"MTU {mtu} is below IPv6's minimum of {IPV6_MIN_MTU} (RFC 8200) on a link with IPv6 addresses; "
               f"use {IPV6_MIN_MTU} or more, or no IPv6 addresses on it")
    if not any(p.path == path and p.message == message for p in d.problems):
        d.add(path, message)


def _end_addresses(link, ep, index: int) -> tuple[IPInterface, ...]:
    """An endpoint's addresses, IPv4 then IPv6: its own `ipv4`/`ipv6`, or the link's `ipv4: [a, b]`
    / `ipv6: [a, b]` item for its position (containerlab's two forms)."""
    found = []
    for family in FAMILIES:
        on_link = link.addresses(family)
        address = ep.address(family) or (on_link[index] if on_link and index < len(on_link) else None)
        if address is not None:
            found.append(address)
    return tuple(found)


def _plan_external(d: Draft, link, ltype: str, lpath: tuple, addresses: dict, host_names: dict) -> None:
    """A `host`, `mgmt-net` or `macvlan` link: one end on a node, the other named by `host-interface`."""
    if link.endpoints and link.type != "veth":
        d.add(lpath + ("endpoints",), f"a {ltype} link has one 'endpoint:' and a 'host-interface:'; "
                                      "'endpoints:' (two of them) is for veth links")
        return
    if link.endpoints:  # brief form: ["l1:eth1", "host:l1-eth1"]
        pi = next(i for i, ep in enumerate(link.endpoints) if ep.node == ltype)
        ep, epath = link.endpoints[1 - pi], lpath + ("endpoints", 1 - pi)
        host_if, hpath = link.endpoints[pi].interface, lpath + ("endpoints", pi)
        found = _end_addresses(link, ep, 1 - pi)
    else:
        ep, epath = link.endpoint, lpath + ("endpoint",)
        host_if, hpath = link.host_interface, lpath + ("host-interface",)
        if ep is None or host_if is None:
            missing = "endpoint: {node: h1, interface: eth1}" if ep is None else "host-interface: NAME"
            d.add(lpath, f"a {ltype} link needs '{missing}'")
            return
        found = _end_addresses(link, ep, 0)
    if not IFNAME.match(host_if):
        d.add(hpath, f"host interface name {host_if!r} ({len(host_if)} characters) is invalid: "
                     "use 1-15 letters, digits, '_', '.' or '-', starting with a letter or digit")
        return
    reserved = {MGMT_BRIDGE, "host", "lo", *d.keys.values()} if ltype == "mgmt-net" else set()
    if host_if in reserved:
        d.add(hpath, f"{host_if!r} is already a port of the mgmt network's namespace; name the mgmt-net end otherwise")
        return
    if ltype != "macvlan" and (ltype, host_if) in host_names:  # several macvlans may share one parent
        d.add(hpath, f"host interface {host_if!r} is already made by {_fmt(host_names[(ltype, host_if)])}")
        return
    if not _claim_end(d, ep, epath, lpath):
        return
    if found and d.is_bridge(ep.node):
        keys = " and ".join(f"ipv{a.version}" for a in found)
        d.add(epath, f"node {ep.node!r} is a bridge: its ports carry no address; remove {keys} here")
        found = ()
    host_names.setdefault((ltype, host_if), hpath)
    mtu = ep.mtu or link.mtu
    _check_ipv6_mtu(d, found, mtu, epath + ("mtu",) if ep.mtu else lpath + ("mtu",))
    d.ifaces[ep.node][ep.interface] = _Iface(found, mtu, epath, peer=(ltype, host_if))
    d.external.append(ExternalLink(ltype, ep.node, ep.interface, host_if, link.mode or "bridge", mtu))
    for address in found:  # the macvlans of one parent share its layer 2, as a bridge's ports do
        shared = {f"macvlan:{host_if}"} if ltype == "macvlan" else set()
        _check_address(d, address, epath, shared | ({ep.node} if d.is_bridge(ep.node) else set()), addresses)


def _impairment(d: Draft, link: Any, ep: Any, epath: tuple) -> Impairment | None:
    """The link's tc keys with the endpoint's over them; None when the end is not impaired."""
    merged = link.impairment().merged(ep.impairment())
    for problem in merged.problems():
        d.add(epath, problem)
    return None if merged.is_empty() else merged


def check_link_subnets(d: Draft) -> None:
    """Different subnets must not overlap; one subnet may span several links only through a bridge.

    Sorted sweep per family, not all pairs: a chain of a thousand links has two thousand subnets.
    """
    first_use: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, tuple[tuple, set[str]]] = {}
    reported: set[tuple] = set()  # (subnet, link): one message per link, not one per end
    for net, path, bridges in d.subnets:
        if net not in first_use:
            first_use[net] = (path, bridges)
            continue
        first_path, first_bridges = first_use[net]
        if path[:3] != first_path[:3] and not (bridges & first_bridges) and (net, path[:3]) not in reported:
            reported.add((net, path[:3]))
            d.add(path, f"subnet {net} is also used by {_fmt(first_path)}; one subnet spans several links "
                        "only through a bridge node")
    widest: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, tuple] | None = None
    for net in sorted(first_use, key=lambda n: (n.version, int(n.network_address), n.prefixlen)):
        if widest and widest[0].version != net.version:
            widest = None  # the other family's sweep starts
        if widest and int(net.network_address) <= int(widest[0].broadcast_address):
            d.add(first_use[net][0], f"subnet {net} overlaps {widest[0]} of {_fmt(widest[1])}; "
                                     "subnets of different links must not overlap")
        if widest is None or int(net.broadcast_address) > int(widest[0].broadcast_address):
            widest = (net, first_use[net][0])


def plan_mgmt(d: Draft) -> None:
    """The mgmt network: a bridge in its own namespace, an address per node (given or the next free)."""
    if not d.has_mgmt:
        for name, node in d.body.nodes.items():
            for family, address in ((4, node.mgmt_ipv4), (6, node.mgmt_ipv6)):
                if address is not None:
                    d.add(("topology", "nodes", name, f"mgmt-ipv{family}"),
                          "there is no mgmt network for this address: add a 'mgmt:' section "
                          f"(e.g. mgmt: {{{_MGMT_EXAMPLE[family]}}}) or remove mgmt-ipv{family}")
        return
    d.mgmt, d.mgmt_ips = _mgmt_plan(d)
    if d.mgmt is not None:
        d.mgmt, d.mgmt_ips6 = _mgmt_plan6(d, d.mgmt)
    for (net, _), path in d.link_subnets().items():
        for subnet in (d.mgmt.subnet, d.mgmt.subnet6) if d.mgmt else ():
            if subnet is not None and net.overlaps(subnet):
                d.add(path, f"subnet {net} overlaps the mgmt subnet {subnet}; use a subnet outside it")


_MGMT_EXAMPLE = {4: "ipv4-subnet: 172.31.0.0/24", 6: "ipv6-subnet: fd00:172:31::/64"}


def check_cluster_cidrs(d: Draft) -> None:
    """Neither link subnets nor the mgmt subnet may overlap the cluster's pod or service CIDR."""
    cluster = d.cluster
    if cluster is None:
        return
    cidrs = (*(("pod-cidr", n) for n in cluster.pod_cidrs), *(("service-cidr", n) for n in cluster.service_cidrs))
    for (net, _), path in d.link_subnets().items():
        for what, cidr in cidrs:
            if net.overlaps(cidr):
                d.add(path, f"subnet {net} overlaps the cluster {what} {cidr}; use a subnet outside it")
    for key, subnet in (("ipv4-subnet", d.mgmt.subnet), ("ipv6-subnet", d.mgmt.subnet6)) if d.mgmt else ():
        for what, cidr in cidrs:
            if subnet is not None and subnet.overlaps(cidr):
                d.add(("mgmt", key), f"mgmt subnet {subnet} overlaps the cluster {what} {cidr}")
    docker = ipaddress.IPv4Network(kinds.DOCKER_SUBNET)
    host = next((n for n in d.settings if (k := d.kind_of(n)) is not None and k.container_host), None)
    for what, net, instead in (*(("pod-cidr", n, "10.244.0.0/16") for n in cluster.pod_cidrs if n.version == 4),
                               *(("service-cidr", n, "10.96.0.0/16") for n in cluster.service_cidrs if n.version == 4),
                               ("mgmt subnet", d.mgmt.subnet if d.mgmt else None, "172.31.0.0/24")):
        if host is not None and net is not None and net.overlaps(docker):
            d.add(("topology", "nodes", host, "kind"),
                  f"a docker-host's containers take {docker} (Docker's default bridge), which overlaps the {what} "
                  f"{net}; move the {what} elsewhere (e.g. {instead})")


def assign_pod_cidrs(d: Draft) -> None:
    """Each cluster node gets the next /24 of an IPv4 pod-cidr and the next /node-mask-v6 of an IPv6 one,
    in node order (kube-controller-manager's range allocator, one range per family)."""
    cluster = d.cluster
    if cluster is None:
        return
    members = [n for n in d.settings if (k := d.kind_of(n)) is not None and k.cluster_node]
    for pod in cluster.pod_cidrs:
        mask = POD_MASK_V4 if pod.version == 4 else cluster.node_mask_v6
        if pod.prefixlen > mask:
            return  # plan_cluster reported it
        subnets = pod.subnets(new_prefix=mask)
        for name in members:
            net = next(subnets, None)
            if net is None:
                d.add(CLUSTER_KEYS["pod"], f"pod-cidr {pod} has fewer /{mask}s than k8s-nodes ({len(members)})")
                return
            d.pod_cidrs[name] = d.pod_cidrs.get(name, ()) + (net,)


def plan_nodes(d: Draft) -> None:
    """Each node's interfaces, routes, sysctls and exec commands."""
    for index, name in enumerate(d.body.nodes):
        s = d.settings[name]
        path = ("topology", "nodes", name)
        interfaces = []
        if name in d.mgmt_ips:
            mgmt = (d.mgmt_ips[name], *([d.mgmt_ips6[name]] if name in d.mgmt_ips6 else []))
            interfaces.append(Interface(MGMT_IFNAME, mgmt))
        for ifname, end in d.ifaces[name].items():
            peer = end.peer or (None, None)
            interfaces.append(Interface(ifname, end.addresses, end.mtu, peer[0], peer[1]))
        kind = d.kind_of(name) or kinds.LINUX
        ipv6 = any(a.version == 6 for i in interfaces for a in i.addresses)
        d.nodes.append(NodePlan(
            name=name, kind=kind.name, index=index, netns=node_netns(d.lab, d.keys[name]), key=d.keys[name],
            image=s.get("image"), interfaces=tuple(interfaces), routes=_routes(d, name, path, interfaces),
            sysctls=_sysctls(d, kind, path, ipv6), exec=_commands(d, path), mgmt_ipv4=d.mgmt_ips.get(name),
            mgmt_ipv6=d.mgmt_ips6.get(name),
            pod_cidr=d.pod_cidrs.get(name, (None,))[0], pod_cidrs=d.pod_cidrs.get(name, ()),
            container=containers.container_settings(d, name), hosts=_hosts(d, path),
        ))


_HOST_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


def _hosts(d: Draft, path: tuple) -> tuple[tuple[str, str], ...]:
    """`hosts:` entries: each name a DNS name (as /etc/hosts holds them), each address IPv4 or IPv6."""
    found = []
    for name, address in d.settings[path[-1]].get("hosts", {}).items():
        if not _HOST_NAME.match(name):
            d.add(path + ("hosts", name), f"{name!r} is not a host name; valid: lowercase DNS names such as "
                                          "shop.example.test")
            continue
        found.append((name, str(address)))
    return tuple(found)


PASSES: tuple[Callable[[Draft], None], ...] = (
    check_kind_definitions,
    resolve_nodes,
    plan_cluster,
    check_cluster_nodes,
    plan_links,
    check_link_subnets,
    plan_mgmt,
    plan_bgp_settings,
    check_cluster_cidrs,
    assign_pod_cidrs,
    plan_nodes,
    containers.check_order,
    containers.check_ports,
    containers.collect_notes,
)


def build_plan(topo: Topology, source: str, runtime: str | None = None) -> tuple[Plan | None, list[PlanProblem]]:
    """Resolve `topo` into a Plan by running every pass, or return the problems that prevent it."""
    d = Draft(topo, source, runtime)
    for step in PASSES:
        step(d)
    if d.problems:
        return None, d.problems
    plan = Plan(
        lab=d.lab, title=topo.name, runtime=runtime or topo.runtime, source=source, nodes=tuple(d.nodes),
        links=tuple(d.links), mgmt=d.mgmt, cluster=d.cluster,
        external_links=tuple(d.external), notes=tuple(d.notes),
    )
    return plan, []


# ---------------------------------------------------------------- parts of the passes


def _routes(d: Draft, name: str, path: tuple, interfaces: list[Interface]) -> tuple[Route, ...]:
    """The node's static routes (IPv4 and IPv6); a gateway must be on one of its subnets of its family
    (an IPv6 link-local gateway, fe80::/10, needs `dev` instead)."""
    connected = [a.network for i in interfaces for a in i.addresses]
    routes = []
    for ri, r in enumerate(d.settings[name].get("routes", [])):
        via = str(r["via"]) if r.get("via") is not None else None
        gateway = ipaddress.ip_address(via) if via is not None else None
        if via is None and r.get("dev") is None:
            d.add(path + ("routes", ri), "a route needs 'via' or 'dev'")
        if gateway is not None and gateway.version == 6 and gateway.is_link_local:
            if r.get("dev") is None:
                d.add(path + ("routes", ri, "via"), f"gateway {via} is a link-local address: "
                                                    "give the interface it is on too (dev: eth1)")
        elif gateway is not None and not any(gateway in net for net in connected):
            mine = [str(n) for n in connected if n.version == gateway.version]
            where = ", ".join(mine) or "none"
            d.add(path + ("routes", ri, "via"),
                  f"gateway {via} is outside every IPv{gateway.version} subnet of node {name!r} "
                  f"(its subnets: {where})")
        if r.get("dev") is not None and r["dev"] not in {i.name for i in interfaces}:
            have = ", ".join(i.name for i in interfaces) or "none"
            d.add(path + ("routes", ri, "dev"), f"node {name!r} has no interface {r['dev']!r} "
                                                f"(its interfaces: {have})")
        routes.append(Route(r["dst"], via, r.get("dev")))
    return tuple(routes)


IPV4_FORWARDING = "net.ipv4.ip_forward"
IPV6_FORWARDING = "net.ipv6.conf.all.forwarding"


def _sysctls(d: Draft, kind: kinds.NodeKind, path: tuple, ipv6: bool = False) -> tuple[tuple[str, str], ...]:
    """The kind's defaults, then the node's own; only keys of the node's network namespace.
    A node with IPv6 addresses that forwards IPv4 forwards IPv6 too (unless it says otherwise)."""
    sysctls = []
    wanted = {**kind.sysctls, **d.settings[path[-1]].get("sysctls", {})}
    if ipv6 and str(wanted.get(IPV4_FORWARDING)) == "1" and IPV6_FORWARDING not in wanted:
        wanted[IPV6_FORWARDING] = "1"
    for key, value in wanted.items():
        if not SYSCTL_KEY.match(key) or ".." in key:
            d.add(path + ("sysctls", key), f"{key!r} is not a sysctl name like net.ipv4.ip_forward")
        elif (problem := namespaced_problem(key)) is not None:
            message, hint = problem
            d.add(path + ("sysctls", key), message, hint)
        sysctls.append((key, str(value)))
    return tuple(sysctls)


def _commands(d: Draft, path: tuple) -> tuple[tuple[str, ...], ...]:
    commands = []
    for ci, command in enumerate(d.settings[path[-1]].get("exec", [])):
        try:
            commands.append(tuple(shlex.split(command)))
        except ValueError as exc:
            d.add(path + ("exec", ci), f"cannot split command {command!r}: {exc}; "
                                       "it is split like a shell would: close every quote")
    return tuple(commands)


def _fmt(path: tuple) -> str:
    return dotted(path)  # the same spelling as the field of a message: topology.links[0].endpoints[1]


def _mgmt_plan(d: Draft) -> tuple[MgmtPlan | None, dict[str, IPv4Interface]]:
    m = d.topo.mgmt or Mgmt()
    subnet = m.ipv4_subnet
    hosts = iter(subnet.hosts())  # a list, not an iterator, for /31 and /32
    gateway_ip = next(hosts, None)
    if gateway_ip is None:
        d.add(("mgmt", "ipv4-subnet"), f"mgmt subnet {subnet} has no room for addresses")
        return None, {}
    if m.ipv4_gw is not None:  # containerlab's ipv4-gw: the bridge's own address
        if m.ipv4_gw not in subnet or m.ipv4_gw in (subnet.network_address, subnet.broadcast_address):
            d.add(("mgmt", "ipv4-gw"), f"gateway {m.ipv4_gw} is not a host address of the mgmt subnet {subnet}")
        else:
            gateway_ip = m.ipv4_gw
            hosts = iter(subnet.hosts())
    if m.ipv4_range is not None:  # containerlab's ipv4-range: automatic addresses come from it
        if not m.ipv4_range.subnet_of(subnet):
            d.add(("mgmt", "ipv4-range"), f"range {m.ipv4_range} is not inside the mgmt subnet {subnet}")
        else:
            hosts = (h for h in subnet.hosts() if h in m.ipv4_range)
    taken = {gateway_ip}
    explicit: dict[str, ipaddress.IPv4Address] = {}
    for name, node in d.body.nodes.items():
        if node.mgmt_ipv4 is None:
            continue
        path = ("topology", "nodes", name, "mgmt-ipv4")
        if d.is_bridge(name):
            d.add(path, f"node {name!r} is a bridge: it has no mgmt interface; remove mgmt-ipv4")
            continue
        first_free = f"use a host address of {subnet} from {gateway_ip + 1} up"
        if node.mgmt_ipv4 not in subnet:
            d.add(path, f"address {node.mgmt_ipv4} is outside the mgmt subnet {subnet}; {first_free}")
        elif node.mgmt_ipv4 in (subnet.network_address, subnet.broadcast_address):
            which = "network" if node.mgmt_ipv4 == subnet.network_address else "broadcast"
            d.add(path, f"address {node.mgmt_ipv4} is the {which} address of the mgmt subnet; {first_free}")
        elif node.mgmt_ipv4 == gateway_ip:
            d.add(path, f"address {node.mgmt_ipv4} is the mgmt gateway (the bridge's own address); {first_free}")
        elif node.mgmt_ipv4 in taken:
            owner = next(n for n, ip in explicit.items() if ip == node.mgmt_ipv4)
            d.add(path, f"address {node.mgmt_ipv4} is already the mgmt address of node {owner!r}")
        taken.add(node.mgmt_ipv4)
        explicit[name] = node.mgmt_ipv4
    ips: dict[str, IPv4Interface] = {}
    for name in d.settings:
        if d.is_bridge(name):
            continue
        ip = explicit.get(name)
        if ip is None:
            ip = next((h for h in hosts if h not in taken), None)
            if ip is None:
                need = sum(1 for n in d.settings if not d.is_bridge(n))
                room = subnet.num_addresses - (2 if subnet.prefixlen < 31 else 0) - 1  # less the gateway
                d.add(("mgmt", "ipv4-subnet"), f"mgmt subnet {subnet} has room for {room} node address(es) "
                                               f"besides the gateway, but {need} nodes need one; "
                                               "use a larger subnet (e.g. a /24)")
                break
            taken.add(ip)
        ips[name] = IPv4Interface(f"{ip}/{subnet.prefixlen}")
    plan = MgmtPlan(
        netns=mgmt_netns(d.lab), bridge=MGMT_BRIDGE, subnet=subnet,
        gateway=IPv4Interface(f"{gateway_ip}/{subnet.prefixlen}"), host_access=m.host_access,
        host_ifname=host_link_name(d.lab),
    )
    return plan, ips


def _mgmt_plan6(d: Draft, plan: MgmtPlan) -> tuple[MgmtPlan, dict[str, IPv6Interface]]:
    """IPv6 on the mgmt network, when `mgmt.ipv6-subnet` is given, the cluster has IPv6 or a node gives
    `mgmt-ipv6`: the bridge's address (`ipv6-gw`, default the subnet's first) and one per node, given or the
    next free one of `ipv6-range` (default: the subnet), as for IPv4."""
    m = d.topo.mgmt or Mgmt()
    wanted = (m.ipv6_subnet is not None or (d.cluster is not None and 6 in d.cluster.families)
              or any(node.mgmt_ipv6 is not None for node in d.body.nodes.values()))
    if not wanted:
        return plan, {}
    subnet = m.ipv6_subnet or ipaddress.IPv6Network(DEFAULT_IPV6_SUBNET)
    if subnet.prefixlen > 126:
        d.add(("mgmt", "ipv6-subnet"), f"mgmt subnet {subnet} has no room for addresses; use a /64")
        return plan, {}
    first = subnet.network_address + 1  # the network address is IPv6's Subnet-Router anycast address
    gateway_ip = first
    if m.ipv6_gw is not None:
        if m.ipv6_gw not in subnet or m.ipv6_gw == subnet.network_address:
            d.add(("mgmt", "ipv6-gw"), f"gateway {m.ipv6_gw} is not a host address of the mgmt subnet {subnet}")
        else:
            gateway_ip = m.ipv6_gw
    pool = subnet
    if m.ipv6_range is not None:
        if not m.ipv6_range.subnet_of(subnet):
            d.add(("mgmt", "ipv6-range"), f"range {m.ipv6_range} is not inside the mgmt subnet {subnet}")
        else:
            pool = m.ipv6_range
    taken = {gateway_ip}
    explicit: dict[str, ipaddress.IPv6Address] = {}
    for name, node in d.body.nodes.items():
        address = node.mgmt_ipv6
        if address is None:
            continue
        path = ("topology", "nodes", name, "mgmt-ipv6")
        if d.is_bridge(name):
            d.add(path, f"node {name!r} is a bridge: it has no mgmt interface; remove mgmt-ipv6")
            continue
        example = gateway_ip + 1 if gateway_ip + 1 != address else gateway_ip + 2
        if address not in subnet:
            default = "" if m.ipv6_subnet is not None else " (the default one: set mgmt.ipv6-subnet to another)"
            d.add(path, f"address {address} is outside the mgmt IPv6 subnet {subnet}{default}; "
                        f"use an address inside it, e.g. {example}")
        elif address == subnet.network_address:
            d.add(path, f"address {address} is the Subnet-Router anycast address (the first) of the mgmt IPv6 "
                        f"subnet; use another, e.g. {example}")
        elif address == gateway_ip:
            d.add(path, f"address {address} is the mgmt IPv6 gateway (the bridge's own address); "
                        f"use another, e.g. {example}")
        elif address in taken:
            owner = next(n for n, ip in explicit.items() if ip == address)
            d.add(path, f"address {address} is already the mgmt address of node {owner!r}")
        taken.add(address)
        explicit[name] = address
    # candidates in order, lazily: a /64 has 2**64 of them
    candidate = max(pool.network_address, first)
    last = pool.broadcast_address
    ips: dict[str, IPv6Interface] = {}
    for name in d.mgmt_ips:  # the nodes with a mgmt interface, in node order
        ip = explicit.get(name)
        if ip is None:
            while candidate in taken and candidate <= last:
                candidate += 1
            if candidate > last:
                d.add(("mgmt", "ipv6-range" if m.ipv6_range else "ipv6-subnet"),
                      f"{pool} has too few addresses for every node's mgmt address; use a larger range (a /64)")
                break
            ip = candidate
            taken.add(ip)
        ips[name] = IPv6Interface(f"{ip}/{subnet.prefixlen}")
    return dataclasses.replace(plan, subnet6=subnet, gateway6=IPv6Interface(f"{gateway_ip}/{subnet.prefixlen}")), ips
