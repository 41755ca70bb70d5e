"""NetworkPolicy (networking.k8s.io/v1) compiled into what one node must enforce. Pure.

The result answers, for every pod on the node that some policy isolates: which
peers may talk to it (ingress) or which destinations it may reach (egress), on
which protocols and ports. Everything is resolved to addresses and port ranges
here, so the rule set renderer only has to write them down:

- a policy selects pods of its own namespace by `spec.podSelector` (empty: all);
- a pod selected by any policy listing `Ingress` (or `Egress`) in its policyTypes
  is isolated in that direction; the allowed traffic is the union of the rules of
  every such policy (policies only add);
- a peer is `podSelector` alone (pods of the policy's namespace),
  `namespaceSelector` alone (every pod of the matching namespaces), both (pods
  matching both, AND) or an `ipBlock` (`cidr` minus `except`); an empty peer list
  means every address;
- both address families are values, not assumptions: a pod has one address per
  family of the cluster (dual-stack: two), a pod peer stands for all of them, an
  `ipBlock` for addresses of its own family only (so an IPv4 block admits a
  dual-stack pod's IPv4 traffic and not its IPv6 traffic, as in Kubernetes);
- a rule without ports allows every protocol and port; a numeric port may carry
  `endPort`; a named port is resolved against the destination pod's
  containerPorts (the isolated pod itself for ingress, each peer pod for egress),
  so a named egress port only ever matches pod destinations.

What is not here but in the rule set: replies of allowed connections pass, and
the node a pod runs on may always reach it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from labkit.families import IPAddress, IPNetwork
from labkit.k8s.load import Workloads
from labkit.k8s.models import (
    LabelSelector,
    NetworkPolicy,
    NetworkPolicyPeer,
    NetworkPolicyPort,
    Pod,
)

Direction = Literal["ingress", "egress"]
DIRECTIONS: tuple[Direction, ...] = ("ingress", "egress")
_POLICY_TYPE: dict[Direction, str] = {"ingress": "Ingress", "egress": "Egress"}


def selects(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """matchLabels AND every matchExpressions term (In, NotIn, Exists, DoesNotExist).

    An empty selector selects everything, as NetworkPolicy defines it.
    """
    if any(labels.get(key) != value for key, value in selector.matchLabels.items()):
        return False
    for term in selector.matchExpressions:
        present = term.key in labels
        if term.operator == "In":
            ok = present and labels[term.key] in term.values
        elif term.operator == "NotIn":
            ok = not present or labels[term.key] not in term.values
        elif term.operator == "Exists":
            ok = present
        elif term.operator == "DoesNotExist":
            ok = not present
        else:  # the model only admits the four operators; fail closed on anything else
            ok = False
        if not ok:
            return False
    return True


@dataclass(frozen=True, order=True)
class PortRange:
    """`protocol` ports `first`..`last` (one port when equal); protocol is "tcp" or "udp"."""

    protocol: str
    first: int
    last: int

    def __contains__(self, probe: tuple[str, int]) -> bool:
        protocol, port = probe
        return protocol == self.protocol and self.first <= port <= self.last

    def __str__(self) -> str:
        span = str(self.first) if self.first == self.last else f"{self.first}-{self.last}"
        return f"{self.protocol} . {span}"


@dataclass(frozen=True)
class NamedDestination:
    """An egress named port resolved on one destination pod: one of that pod's addresses and the port."""

    ip: str
    port: PortRange

    def __str__(self) -> str:
        return f"{self.ip} . {self.port}"


@dataclass(frozen=True)
class RuleRef:
    """Which rule of which policy: `x/allow-web` ingress rule 0."""

    policy: str  # "ns/name"
    direction: Direction
    index: int

    def __str__(self) -> str:
        return f"{self.policy} {self.direction}[{self.index}]"


@dataclass(frozen=True)
class Allow:
    """One rule of one policy as it applies to one isolated pod.

    Traffic matches when the peer address is in `peers` (None: any address of any family) and
    (protocol, port) is in `ports` (None: any protocol and port), or, for egress
    named ports, when (destination, protocol, port) is one of `destinations`.
    """

    rule: RuleRef
    peers: tuple[IPNetwork, ...] | None  # IPv4 networks first, then IPv6
    ports: tuple[PortRange, ...] | None
    destinations: tuple[NamedDestination, ...] = ()

    @property
    def matches_nothing(self) -> bool:
        return (self.ports == () and not self.destinations) or self.peers == ()

    def peers_of(self, family: int) -> tuple[IPNetwork, ...]:
        """The peer networks of one family (4 or 6); only meaningful when `peers` is not None."""
        return tuple(net for net in self.peers or () if net.version == family)

    def allows(self, peer: str, protocol: str, port: int) -> bool:
        address = ipaddress.ip_address(peer)
        peer = str(address)
        if any(d.ip == peer and (protocol, port) in d.port for d in self.destinations):
            return True
        if self.peers is not None and not any(address in net for net in self.peers):
            return False
        return self.ports is None or any((protocol, port) in r for r in self.ports)


@dataclass(frozen=True)
class IsolatedPod:
    """A pod on this node that policies isolate in `direction`, and what they allow.

    `ips`: its addresses, one per family (the cluster's preferred family first); the same
    chain guards all of them."""

    pod: str  # "ns/name"
    ips: tuple[str, ...]
    direction: Direction
    policies: tuple[str, ...]
    allows: tuple[Allow, ...]

    @property
    def ip(self) -> str:
        return self.ips[0]

    def allowed(self, peer: str, protocol: str, port: int) -> bool:
        return any(a.allows(peer, protocol, port) for a in self.allows)


@dataclass(frozen=True)
class NodePolicy:
    """Everything one node enforces: its isolated pods, per direction."""

    node: str
    node_ips: tuple[str, ...]
    ingress: tuple[IsolatedPod, ...] = ()
    egress: tuple[IsolatedPod, ...] = ()
    by_ip: Mapping[tuple[Direction, str], IsolatedPod] = field(default_factory=dict, compare=False, repr=False)

    def isolated(self, direction: Direction, ip: str) -> IsolatedPod | None:
        return self.by_ip.get((direction, str(ipaddress.ip_address(ip))))

    @property
    def families(self) -> tuple[int, ...]:
        """The address families (4, 6) of the node and the pods it guards, in numeric order."""
        ips = [*self.node_ips, *(ip for guard in (*self.ingress, *self.egress) for ip in guard.ips)]
        return tuple(sorted({ipaddress.ip_address(ip).version for ip in ips}))

    def node_ips_of(self, family: int) -> tuple[str, ...]:
        return tuple(ip for ip in self.node_ips if ipaddress.ip_address(ip).version == family)

    def allows(self, direction: Direction, pod_ip: str, peer_ip: str, protocol: str, port: int) -> bool:
        """Would this node let `peer_ip` reach the local pod (ingress) or the pod reach it (egress)?

        A reference evaluator of the compiled model, for tests and explanations;
        `protocol` is "tcp" or "udp"; both addresses are of one family.
        """
        guard = self.isolated(direction, pod_ip)
        return guard is None or guard.allowed(peer_ip, protocol, port)


# ---------------------------------------------------------------- the compiler


# An address range of one family: (family, first, last), the addresses as numbers.
_Range = tuple[int, int, int]
_ADDRESS = {4: ipaddress.IPv4Address, 6: ipaddress.IPv6Address}


@dataclass(frozen=True)
class _Cluster:
    """The selectable world: pods with addresses (as numbers too, for range tests), namespace labels."""

    pods: tuple[tuple[Pod, tuple[str, ...]], ...]  # (pod, its ips), only pods with an address
    namespace_labels: Mapping[str, Mapping[str, str]]
    ranges: Mapping[str, _Range] = field(default_factory=dict)  # ip -> itself as a range of one

    def pods_matching(self, policy_ns: str, peer: NetworkPolicyPeer) -> list[tuple[Pod, tuple[str, ...]]]:
        if peer.namespaceSelector is None:
            namespaces = {policy_ns}
        else:  # judged once per namespace, not once per pod
            namespaces = {ns for ns, labels in self.namespace_labels.items()
                          if selects(peer.namespaceSelector, labels)}
        return [(pod, ips) for pod, ips in self.pods if pod.namespace in namespaces
                and (peer.podSelector is None or selects(peer.podSelector, pod.labels))]


def _ip_block(cidr: str, excepted: Iterable[str]) -> list[_Range]:
    """`cidr` minus `except`, as sorted address ranges of cidr's family.

    The model has checked that every except is of cidr's family and inside it; a hole of the
    other family (a caller that skipped the model) would be a silent no-op, so it is refused."""
    net = ipaddress.ip_network(cidr)
    family = net.version
    ranges = [(int(net.network_address), int(net.broadcast_address))]
    for hole in sorted(map(ipaddress.ip_network, excepted), key=lambda n: (n.version, n)):
        if hole.version != family:
            raise ValueError(f"ipBlock {cidr}: except {hole} is not of the same address family")
        low, high = int(hole.network_address), int(hole.broadcast_address)
        kept = []
        for first, last in ranges:
            if high < first or low > last:
                kept.append((first, last))
                continue
            if first < low:
                kept.append((first, low - 1))
            if high < last:
                kept.append((high + 1, last))
        ranges = kept
    return [(family, first, last) for first, last in ranges]


def _holds(ranges: Iterable[_Range], address: _Range) -> bool:
    family, number, _ = address
    return any(f == family and first <= number <= last for f, first, last in ranges)


def _networks(ranges: Iterable[_Range]) -> tuple[IPNetwork, ...]:
    """Address ranges joined where they overlap or touch, written as the fewest CIDRs (IPv4 first)."""
    merged: list[list[int]] = []
    for family, first, last in sorted(ranges):
        if merged and family == merged[-1][0] and first <= merged[-1][2] + 1:
            merged[-1][2] = max(merged[-1][2], last)
        else:
            merged.append([family, first, last])
    out: list[IPNetwork] = []
    for family, first, last in merged:
        address = _ADDRESS[family]
        out.extend(ipaddress.summarize_address_range(address(first), address(last)))
    return tuple(out)


def _peers(
    cluster: _Cluster, policy_ns: str, peers: Sequence[NetworkPolicyPeer]
) -> tuple[tuple[IPNetwork, ...] | None, list[tuple[Pod, tuple[str, ...]]] | None]:
    """(addresses, pods among them with their addresses among them) of a rule's peers;
    (None, None) for "everyone"."""
    if not peers:
        return None, None
    ranges: list[_Range] = []
    pods: dict[str, tuple[Pod, tuple[str, ...]]] = {}

    def add(pod: Pod, all_ips: tuple[str, ...], ips: tuple[str, ...]) -> None:
        held = pods.get(pod.key)
        if held is not None and held[1] != ips:  # a second peer holds it too: the union, in the pod's order
            ips = tuple(ip for ip in all_ips if ip in held[1] or ip in ips)
        pods[pod.key] = (pod, ips)

    for peer in peers:
        if peer.ipBlock is not None:
            block = _ip_block(peer.ipBlock.cidr, peer.ipBlock.except_)
            ranges.extend(block)
            for pod, ips in cluster.pods:
                # only the pod's addresses the block holds: of its family, not excepted
                inside = tuple(ip for ip in ips if _holds(block, cluster.ranges[ip]))
                if inside:
                    add(pod, ips, inside)
        else:
            for pod, ips in cluster.pods_matching(policy_ns, peer):
                add(pod, ips, ips)
                ranges.extend(cluster.ranges[ip] for ip in ips)
    return _networks(ranges), sorted(pods.values(), key=lambda p: p[0].key)


def merge_ranges(ranges: Iterable[PortRange]) -> tuple[PortRange, ...]:
    """Sorted, with overlapping or touching ranges of a protocol joined (nft interval sets need it)."""
    merged: list[PortRange] = []
    for item in sorted(set(ranges)):
        last = merged[-1] if merged else None
        if last and last.protocol == item.protocol and item.first <= last.last + 1:
            merged[-1] = PortRange(last.protocol, last.first, max(last.last, item.last))
        else:
            merged.append(item)
    return tuple(merged)


def _numeric(ports: Sequence[NetworkPolicyPort]) -> list[PortRange]:
    out = []
    for p in ports:
        protocol = p.protocol.lower()
        if p.port is None:  # a protocol without a port: every port of it
            out.append(PortRange(protocol, 0, 65535))
        elif isinstance(p.port, int):
            out.append(PortRange(protocol, p.port, p.endPort or p.port))
    return out


def _named_on(pod: Pod, ports: Sequence[NetworkPolicyPort]) -> list[PortRange]:
    out = []
    for p in ports:
        if isinstance(p.port, str):
            number = pod.spec.named_port(p.port, p.protocol)
            if number is not None:
                out.append(PortRange(p.protocol.lower(), number, number))
    return out


def _isolates(policy: NetworkPolicy, direction: Direction) -> bool:
    return _POLICY_TYPE[direction] in policy.spec.policyTypes


def _rules(policy: NetworkPolicy, direction: Direction):
    if direction == "ingress":
        return [(rule.from_, rule.ports) for rule in policy.spec.ingress]
    return [(rule.to, rule.ports) for rule in policy.spec.egress]


def pod_addresses(key: str, value: str | Sequence[str]) -> tuple[IPAddress, ...]:
    """A pod's addresses, at most one per family, order kept (one address alone is fine: a
    single-stack pod). Raises ValueError on anything else."""
    if isinstance(value, str):
        return (ipaddress.ip_address(value),)
    out = tuple(map(ipaddress.ip_address, value))
    if len({a.version for a in out}) != len(out):
        raise ValueError(f"pod {key} has two addresses of one family ({', '.join(map(str, out))}): "
                         "a pod has at most one per family")
    return out


def compile_node_policy(
    workloads: Workloads,
    pod_ips: Mapping[str, str | Sequence[str]],
    *,
    node_name: str,
    pod_nodes: Mapping[str, str],
    node_ips: Sequence[str] = (),
) -> NodePolicy:
    """What node `node_name` enforces for the pods `pod_nodes` places on it.

    `pod_ips` maps "ns/pod" to its address, or its addresses (one per family, the
    preferred first); pods without one are neither guarded nor selectable as peers.
    `node_ips` are the node's own addresses, of either family. Raises ValueError on
    anything that is not an IP address, so nothing else reaches the rule set.
    """
    parsed = {key: addresses for key, value in pod_ips.items() if (addresses := pod_addresses(key, value))}
    ips = {key: tuple(map(str, addresses)) for key, addresses in parsed.items()}
    own_ips = tuple(dict.fromkeys(str(ipaddress.ip_address(ip)) for ip in node_ips))
    owners: dict[str, str] = {}
    for key, addresses in sorted(ips.items()):
        for ip in addresses:
            if ip in owners:
                raise ValueError(f"pods {owners[ip]} and {key} have the same address {ip}")
            owners[ip] = key
    cluster = _Cluster(
        pods=tuple((pod, ips[pod.key]) for pod in workloads.pods if pod.key in ips),
        namespace_labels={ns.name: ns.labels for ns in workloads.namespaces},
        ranges={str(a): (a.version, int(a), int(a)) for addresses in parsed.values() for a in addresses},
    )
    local = [(pod, addresses) for pod, addresses in cluster.pods if pod_nodes.get(pod.key) == node_name]
    policies = sorted(workloads.network_policies, key=lambda p: p.key)

    # A rule's peers do not depend on the pod it guards, nor its ports unless they are named
    # ingress ports (resolved on the guarded pod): resolve each rule once where that holds.
    resolved: dict[RuleRef, tuple] = {}
    shared: dict[RuleRef, Allow] = {}
    result: dict[Direction, list[IsolatedPod]] = {"ingress": [], "egress": []}
    for direction in DIRECTIONS:
        for pod, addresses in local:
            selecting = [
                p for p in policies
                if p.namespace == pod.namespace and _isolates(p, direction)
                and selects(p.spec.podSelector, pod.labels)
            ]
            if not selecting:
                continue
            allows: list[Allow] = []
            for policy in selecting:
                for index, (peers, ports) in enumerate(_rules(policy, direction)):
                    ref = RuleRef(policy.key, direction, index)
                    if ref in shared:
                        allows.append(shared[ref])
                        continue
                    if ref not in resolved:
                        resolved[ref] = _peers(cluster, policy.namespace, peers)
                    networks, peer_pods = resolved[ref]
                    allow = _allow(ref, networks, peer_pods, ports, pod, cluster, direction)
                    if direction == "egress" or not any(isinstance(p.port, str) for p in ports):
                        shared[ref] = allow
                    allows.append(allow)
            result[direction].append(IsolatedPod(
                pod=pod.key, ips=addresses, direction=direction,
                policies=tuple(p.key for p in selecting), allows=tuple(allows),
            ))
    by_ip = {(d, ip): guard for d in DIRECTIONS for guard in result[d] for ip in guard.ips}
    return NodePolicy(node=node_name, node_ips=own_ips, ingress=tuple(result["ingress"]),
                      egress=tuple(result["egress"]), by_ip=by_ip)


def _allow(
    ref: RuleRef,
    networks: tuple[IPNetwork, ...] | None,
    peer_pods: list[tuple[Pod, tuple[str, ...]]] | None,
    ports: Sequence[NetworkPolicyPort],
    pod: Pod,
    cluster: _Cluster,
    direction: Direction,
) -> Allow:
    if not ports:
        return Allow(ref, networks, None)
    numeric = _numeric(ports)
    if direction == "ingress":
        # The destination is the guarded pod: its own containerPorts name the ports.
        return Allow(ref, networks, merge_ranges([*numeric, *_named_on(pod, ports)]))
    destinations = []
    if any(isinstance(p.port, str) for p in ports):
        for peer, ips in peer_pods if peer_pods is not None else cluster.pods:
            destinations.extend(NamedDestination(ip, r) for ip in ips for r in merge_ranges(_named_on(peer, ports)))
    return Allow(ref, networks, merge_ranges(numeric), tuple(destinations))
