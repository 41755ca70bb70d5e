"""MetalLB in the plan: its configuration objects read as written, and LoadBalancer addresses allocated. Pure.

    IPAddressPool (metallb.io/v1beta1)    addresses (`a-b` ranges and CIDRs), autoAssign, avoidBuggyIPs,
                                          serviceAllocation (priority, namespaces, namespace/service selectors)
    L2Advertisement (metallb.io/v1beta1)  which pools are answered for over ARP, from which nodes, on which interfaces
    BGPAdvertisement (metallb.io/v1beta1) which pools the nodes' BGP daemons announce as /32s, from which nodes
    BGPPeer (metallb.io/v1beta2)          a router the nodes peer with: must be one of `cluster.cni.bgp.peers`

What MetalLB's controller does is done once here, when the plan is loaded: each `type: LoadBalancer`
Service gets an address (the one `metallb.io/loadBalancerIPs` or `spec.loadBalancerIP` asks for, else the
first free one of the first pool that may serve it, pools ordered by `serviceAllocation.priority`), or is
left pending with the reason, as MetalLB leaves it. What only the file shows wrong (an address outside
every pool, overlapping pools, a pool inside the pod or service network, a pool or peer that does not
exist) is an error at `validate`. Which node answers for an address is decided at run time (labkit.lb)
by `l2_order`: MetalLB's ordering, a sha256 of `node#ip`, over the nodes whose speaker runs.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictInt, StrictStr, model_validator

from labkit.errors import InputError, Problem
from labkit.k8s.models import K8sModel, LabelSelector, Service, _Object, _fail, _in_range

Workloads = Any  # labkit.k8s.load.Workloads (which imports this module)

API_VERSIONS = {
    "IPAddressPool": "metallb.io/v1beta1",
    "L2Advertisement": "metallb.io/v1beta1",
    "BGPAdvertisement": "metallb.io/v1beta1",
    "BGPPeer": "metallb.io/v1beta2",
}
LB_IPS_ANNOTATIONS = ("metallb.io/loadBalancerIPs", "metallb.universe.tf/loadBalancerIPs")
POOL_ANNOTATIONS = ("metallb.io/address-pool", "metallb.universe.tf/address-pool")
SHARING_ANNOTATIONS = ("metallb.io/allow-shared-ip", "metallb.universe.tf/allow-shared-ip")
MAX_POOL_ADDRESSES = 1 << 16  # per pool: a lab hands out a few; a /8 would only cost time


# ---------------------------------------------------------------- the objects


def parse_addresses(text: str) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """A pool's `addresses` item: a CIDR (every address in it, as MetalLB hands them out) or `first-last`."""
    text = text.strip()
    try:
        if "-" in text:
            first, last = (ipaddress.IPv4Address(part.strip()) for part in text.split("-", 1))
            if last < first:
                raise ValueError(f"{last} comes before {first}")
            return first, last
        net = ipaddress.IPv4Network(text, strict=True)
        return net.network_address, net.broadcast_address
    except ValueError as exc:
        raise ValueError(f"{text!r} is not valid ({exc}); valid: an IPv4 CIDR (192.168.10.0/24) or a range "
                         "(192.168.10.10-192.168.10.20); IPv6 is not acted on yet") from None


class ServiceAllocation(K8sModel):
    priority: StrictInt | None = None
    namespaces: tuple[StrictStr, ...] = ()
    namespaceSelectors: tuple[LabelSelector, ...] = ()
    serviceSelectors: tuple[LabelSelector, ...] = ()


class IPAddressPoolSpec(K8sModel):
    addresses: tuple[StrictStr, ...] = Field(min_length=1)
    autoAssign: StrictBool = True
    avoidBuggyIPs: StrictBool = False
    serviceAllocation: ServiceAllocation | None = None

    @model_validator(mode="after")
    def _ranges(self) -> IPAddressPoolSpec:
        total = 0
        for i, item in enumerate(self.addresses):
            try:
                first, last = parse_addresses(item)
            except ValueError as exc:
                raise _fail(str(exc), "addresses", i) from None
            total += int(last) - int(first) + 1
        if total > MAX_POOL_ADDRESSES:
            raise _fail(f"{total} addresses; a pool here may hold at most {MAX_POOL_ADDRESSES}", "addresses")
        return self

    def ranges(self) -> list[tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]]:
        return [parse_addresses(a) for a in self.addresses]

    def contains(self, ip: ipaddress.IPv4Address) -> bool:
        return any(first <= ip <= last for first, last in self.ranges())

    def hosts(self) -> Iterator[ipaddress.IPv4Address]:
        """Every address the pool hands out, in order (avoidBuggyIPs: none ending in .0 or .255)."""
        for first, last in self.ranges():
            for number in range(int(first), int(last) + 1):
                ip = ipaddress.IPv4Address(number)
                if self.avoidBuggyIPs and ip.packed[3] in (0, 255):
                    continue
                yield ip


class IPAddressPool(_Object):
    apiVersion: Literal["metallb.io/v1beta1"] = "metallb.io/v1beta1"
    kind: Literal["IPAddressPool"] = "IPAddressPool"
    spec: IPAddressPoolSpec


class _AdvertisementSpec(K8sModel):
    ipAddressPools: tuple[StrictStr, ...] = ()
    ipAddressPoolSelectors: tuple[LabelSelector, ...] = ()
    nodeSelectors: tuple[LabelSelector, ...] = ()

    def selects_pool(self, pool: IPAddressPool) -> bool:
        """No pool named or selected: every pool (as MetalLB reads an advertisement without either)."""
        if not self.ipAddressPools and not self.ipAddressPoolSelectors:
            return True
        return pool.name in self.ipAddressPools or any(s.matches(pool.labels) for s in self.ipAddressPoolSelectors)

    def selects_node(self, labels: Mapping[str, str]) -> bool:
        return not self.nodeSelectors or any(s.matches(labels) for s in self.nodeSelectors)


class L2AdvertisementSpec(_AdvertisementSpec):
    interfaces: tuple[Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,14}$")], ...] = ()


class L2Advertisement(_Object):
    apiVersion: Literal["metallb.io/v1beta1"] = "metallb.io/v1beta1"
    kind: Literal["L2Advertisement"] = "L2Advertisement"
    spec: L2AdvertisementSpec = Field(default_factory=L2AdvertisementSpec)


class BGPAdvertisementSpec(_AdvertisementSpec):
    _unused = frozenset({"localPref", "communities", "aggregationLengthV6", "peers"})  # peers: names checked

    aggregationLength: Annotated[StrictInt, _in_range(32, 32, "prefix lengths (only /32 is acted on)")] = 32
    aggregationLengthV6: StrictInt | None = None
    localPref: StrictInt | None = None
    communities: tuple[StrictStr, ...] = ()
    peers: tuple[StrictStr, ...] = ()


class BGPAdvertisement(_Object):
    apiVersion: Literal["metallb.io/v1beta1"] = "metallb.io/v1beta1"
    kind: Literal["BGPAdvertisement"] = "BGPAdvertisement"
    spec: BGPAdvertisementSpec = Field(default_factory=BGPAdvertisementSpec)


class BGPPeerSpec(K8sModel):
    _unused = frozenset({"holdTime", "keepaliveTime", "connectTime", "routerID", "sourceAddress", "peerPort",
                         "password", "passwordSecret", "bfdProfile", "ebgpMultiHop", "vrf", "disableMP",
                         "enableGracefulRestart", "nodeSelectors"})
    _ignored = frozenset({"dynamicASN", "interface"})

    myASN: Annotated[StrictInt, _in_range(1, 4294967295, "AS numbers")]
    peerASN: Annotated[StrictInt, _in_range(1, 4294967295, "AS numbers")]
    peerAddress: StrictStr
    holdTime: StrictStr | None = None
    keepaliveTime: StrictStr | None = None
    connectTime: StrictStr | None = None
    routerID: StrictStr | None = None
    sourceAddress: StrictStr | None = None
    peerPort: StrictInt | None = None
    password: StrictStr | None = None
    passwordSecret: dict | None = None
    bfdProfile: StrictStr | None = None
    ebgpMultiHop: StrictBool | None = None
    vrf: StrictStr | None = None
    disableMP: StrictBool | None = None
    enableGracefulRestart: StrictBool | None = None
    nodeSelectors: tuple[LabelSelector, ...] = ()

    @model_validator(mode="after")
    def _address(self) -> BGPPeerSpec:
        try:
            ipaddress.IPv4Address(self.peerAddress)
        except ValueError:
            raise _fail(f"{self.peerAddress!r} is not valid; valid: an IPv4 address", "peerAddress") from None
        return self


class BGPPeer(_Object):
    apiVersion: Literal["metallb.io/v1beta2"] = "metallb.io/v1beta2"
    kind: Literal["BGPPeer"] = "BGPPeer"
    spec: BGPPeerSpec


KINDS: dict[str, type[_Object]] = {"IPAddressPool": IPAddressPool, "L2Advertisement": L2Advertisement,
                                   "BGPAdvertisement": BGPAdvertisement, "BGPPeer": BGPPeer}


# ---------------------------------------------------------------- allocation


@dataclass(frozen=True)
class LoadBalancer:
    """What MetalLB's controller decided for one `type: LoadBalancer` Service."""

    ip: str | None  # None: pending
    pool: str | None = None
    pending: str | None = None  # why no address (MetalLB's event on the Service)
    l2_nodes: tuple[str, ...] = ()  # nodes an L2Advertisement lets answer for it (before liveness/Local)
    interfaces: tuple[str, ...] = ()  # () = every interface of the node but lo
    bgp_nodes: tuple[str, ...] = ()  # nodes a BGPAdvertisement lets announce it

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(m for m, nodes in (("l2", self.l2_nodes), ("bgp", self.bgp_nodes)) if nodes)

    def as_status(self) -> dict:
        return {"ip": self.ip, "pool": self.pool, "mode": "+".join(self.modes) or None, "pending": self.pending,
                "l2_nodes": list(self.l2_nodes), "bgp_nodes": list(self.bgp_nodes),
                "interfaces": list(self.interfaces)}


def l2_order(nodes: Sequence[str], ip: str) -> list[str]:
    """MetalLB's L2 election order: the node whose sha256(`node#ip`) sorts first answers."""
    return sorted(nodes, key=lambda n: hashlib.sha256(f"{n}#{ip}".encode()).digest())


def _annotation(svc: Service, keys: Sequence[str]) -> tuple[str, str] | None:
    for key in keys:
        value = svc.metadata.annotations.get(key)
        if value is not None:
            return key, value
    return None


def _pool_serves(pool: IPAddressPool, svc: Service, namespace_labels: Mapping[str, Mapping[str, str]]) -> bool:
    alloc = pool.spec.serviceAllocation
    if alloc is None:
        return True
    if alloc.namespaces or alloc.namespaceSelectors:
        labels = namespace_labels.get(svc.namespace, {})
        if svc.namespace not in alloc.namespaces and not any(s.matches(labels) for s in alloc.namespaceSelectors):
            return False
    return not alloc.serviceSelectors or any(s.matches(svc.labels) for s in alloc.serviceSelectors)


def _ports(svc: Service) -> set[tuple[str, int]]:
    return {(p.protocol, p.port) for p in svc.spec.ports}


def check_config(workloads: Workloads, *, pod_cidr: str, service_cidr: str,
                 bgp_peers: Sequence[tuple[str, int]] = (), bgp_asn: int | None = None,
                 lab_addresses: Mapping[str, str] | None = None) -> list[Problem]:
    """What the file alone shows wrong with the MetalLB objects (pools overlapping each other, the
    cluster's networks or the lab's own addresses, advertisements naming pools that do not exist, BGP
    without the bgp backend). `lab_addresses`: address -> whose it is (a node's interface)."""
    problems: list[Problem] = []
    for pool in workloads.ip_address_pools:
        for ip, owner in sorted((lab_addresses or {}).items()):
            if pool.spec.contains(ipaddress.IPv4Address(ip)):
                problems.append(workloads.problem(pool, ("spec", "addresses"), f"holds {ip}, {owner}; a speaker "
                                                  "would answer for it: leave the lab's own addresses out"))
    nets = {"pod-cidr": ipaddress.IPv4Network(pod_cidr), "service-cidr": ipaddress.IPv4Network(service_cidr)}
    seen: list[tuple[IPAddressPool, int, ipaddress.IPv4Address, ipaddress.IPv4Address]] = []
    pool_names = {p.name for p in workloads.ip_address_pools}
    for pool in workloads.ip_address_pools:
        for i, (first, last) in enumerate(pool.spec.ranges()):
            where = ("spec", "addresses", i)
            for what, net in nets.items():
                if first <= net.broadcast_address and net.network_address <= last:
                    problems.append(workloads.problem(pool, where, f"{pool.spec.addresses[i]} overlaps the cluster's "
                                                      f"{what} {net}; valid: addresses outside {what}"))
            for other, j, o_first, o_last in seen:
                if first <= o_last and o_first <= last:
                    problems.append(workloads.problem(
                        pool, where, f"{pool.spec.addresses[i]} overlaps {other.spec.addresses[j]} of IPAddressPool "
                        f"{other.key}; an address belongs to one pool"))
            seen.append((pool, i, first, last))
    for adv in (*workloads.l2_advertisements, *workloads.bgp_advertisements):
        for i, name in enumerate(adv.spec.ipAddressPools):
            if name not in pool_names:
                valid = ", ".join(sorted(pool_names)) or "none defined"
                problems.append(workloads.problem(adv, ("spec", "ipAddressPools", i),
                                                  f"no IPAddressPool {name!r}; valid: {valid}"))
    peer_names = {p.name for p in workloads.bgp_peers}
    for adv in workloads.bgp_advertisements:
        for i, name in enumerate(adv.spec.peers):
            if name not in peer_names:
                valid = ", ".join(sorted(peer_names)) or "none defined"
                problems.append(workloads.problem(adv, ("spec", "peers", i), f"no BGPPeer {name!r}; valid: {valid}"))
    if (workloads.bgp_advertisements or workloads.bgp_peers) and bgp_asn is None:
        obj = (workloads.bgp_advertisements or workloads.bgp_peers)[0]
        problems.append(workloads.problem(obj, ("kind",), "MetalLB's BGP mode here uses the nodes' BGP daemons: "
                                          "set cluster.cni.backend: bgp (with cluster.cni.bgp.peers)"))
    known = {(addr, asn) for addr, asn in bgp_peers}
    for peer in workloads.bgp_peers if bgp_asn is not None else ():
        spec = peer.spec
        if (spec.peerAddress, spec.peerASN) not in known:
            valid = ", ".join(f"{a} AS {n}" for a, n in bgp_peers) or "none"
            problems.append(workloads.problem(peer, ("spec", "peerAddress"), (
                f"{spec.peerAddress} AS {spec.peerASN} is not one of cluster.cni.bgp.peers ({valid}); the nodes' "
                "one BGP daemon each sessions with those: add it there")))
        elif spec.myASN != bgp_asn:
            problems.append(workloads.problem(peer, ("spec", "myASN"),
                                              f"{spec.myASN} is not the nodes' AS; valid: {bgp_asn} "
                                              "(cluster.cni.bgp.asn)"))
    return problems


def allocate_load_balancers(workloads: Workloads, nodes: Mapping[str, Mapping[str, str]]
                            ) -> dict[tuple[str, str], LoadBalancer]:
    """(namespace, name) -> LoadBalancer for every `type: LoadBalancer` Service; InputError for requests the
    file shows impossible. `nodes`: each k8s-node's labels (for the advertisements' nodeSelectors)."""
    pools = sorted(workloads.ip_address_pools, key=lambda p: (
        p.spec.serviceAllocation is None or p.spec.serviceAllocation.priority is None,
        p.spec.serviceAllocation.priority if p.spec.serviceAllocation and p.spec.serviceAllocation.priority
        is not None else 0, p.name))
    by_name = {p.name: p for p in pools}
    ns_labels = {ns.name: ns.labels for ns in workloads.namespaces}
    problems: list[Problem] = []
    # ip -> [(service key, sharing key, ports)]
    taken: dict[ipaddress.IPv4Address, list[tuple[tuple[str, str], str | None, set]]] = {}
    result: dict[tuple[str, str], LoadBalancer] = {}
    services = sorted((s for s in workloads.services if s.spec.type == "LoadBalancer"),
                      key=lambda s: (s.namespace, s.name))

    def fits(ip: ipaddress.IPv4Address, svc: Service, sharing: str | None) -> str | None:
        """None if `svc` may have `ip`; else who holds it."""
        for owner, their_sharing, ports in taken.get(ip, []):
            if sharing is None or sharing != their_sharing or ports & _ports(svc):
                return "/".join(owner)
        return None

    def done(svc: Service, ip: ipaddress.IPv4Address | None, pool: IPAddressPool | None,
             pending: str | None = None) -> None:
        key = (svc.namespace, svc.name)
        if ip is not None:
            taken.setdefault(ip, []).append((key, sharing_of(svc), _ports(svc)))
        result[key] = _announce(LoadBalancer(str(ip) if ip else None, pool.name if pool else None, pending),
                                pool, workloads, nodes)

    def sharing_of(svc: Service) -> str | None:
        found = _annotation(svc, SHARING_ANNOTATIONS)
        return found[1] if found else None

    wanted: list[tuple[Service, ipaddress.IPv4Address | None, tuple]] = []
    for svc in services:
        requested = _annotation(svc, LB_IPS_ANNOTATIONS)
        where: tuple = ("metadata", "annotations", requested[0]) if requested else ("spec", "loadBalancerIP")
        text = requested[1] if requested else svc.spec.loadBalancerIP
        if requested and svc.spec.loadBalancerIP:
            problems.append(workloads.problem(svc, where, "set both this and spec.loadBalancerIP; MetalLB "
                                              "refuses the Service: give one"))
            continue
        ip = None
        if text:
            v4 = [t.strip() for t in text.split(",") if t.strip() and ":" not in t]
            try:
                if len(v4) != 1:
                    raise ValueError
                ip = ipaddress.IPv4Address(v4[0])
            except ValueError:
                problems.append(workloads.problem(svc, where, f"{text!r} is not valid; valid: one IPv4 address "
                                                  "(IPv6 is not acted on yet)"))
                continue
        wanted.append((svc, ip, where))
    # Addresses asked for are claimed first, then the others get theirs in (namespace, name) order.
    for svc, ip, where in sorted(wanted, key=lambda w: w[1] is None):
        spec = svc.spec
        if spec.loadBalancerClass:
            done(svc, None, None, f"loadBalancerClass {spec.loadBalancerClass!r}: not MetalLB's; "
                                  "no controller assigns it an address")
            continue
        named = _annotation(svc, POOL_ANNOTATIONS)
        if named and named[1] not in by_name:
            problems.append(workloads.problem(svc, ("metadata", "annotations", named[0]),
                                              f"no IPAddressPool {named[1]!r}; valid: "
                                              f"{', '.join(by_name) or 'none defined'}"))
            continue
        if ip is not None:
            pool = next((p for p in pools if p.spec.contains(ip)), None)
            if pool is None:
                ranges = "; ".join(f"{p.name}: {', '.join(p.spec.addresses)}" for p in pools) or "no pools defined"
                problems.append(workloads.problem(svc, where, f"{ip} is in no IPAddressPool ({ranges}); valid: an "
                                                  "address of a pool"))
                continue
            if named and named[1] != pool.name:
                problems.append(workloads.problem(svc, where, f"{ip} is in pool {pool.name}, not in {named[1]} "
                                                  "(metallb.io/address-pool)"))
                continue
            holder = fits(ip, svc, sharing_of(svc))
            if holder is not None:
                problems.append(workloads.problem(svc, where, f"{ip} is already given to service {holder}; two "
                                                  "Services share an address only with the same "
                                                  "metallb.io/allow-shared-ip and no port in common"))
                continue
            done(svc, ip, pool)
            continue
        if named:
            candidates = [by_name[named[1]]]
        else:
            candidates = [p for p in pools if p.spec.autoAssign and _pool_serves(p, svc, ns_labels)]
        if not candidates:
            done(svc, None, None, "no IPAddressPool may serve it (none defined, none with autoAssign, or "
                                  "serviceAllocation excludes it)")
            continue
        chosen = None
        for pool in candidates:
            sharing = sharing_of(svc)
            # A sharing key first reuses an address already given under it (MetalLB does the same).
            shared = [a for a, owners in taken.items() if sharing and pool.spec.contains(a)
                      and fits(a, svc, sharing) is None and any(o[1] == sharing for o in owners)]
            free = shared[0] if shared else next((a for a in pool.spec.hosts() if a not in taken), None)
            if free is not None:
                chosen = (free, pool)
                break
        if chosen is None:
            done(svc, None, None, f"no available IPs in pool {', '.join(p.name for p in candidates)}")
        else:
            done(svc, *chosen)
    if problems:
        raise InputError(problems)
    return result


def _announce(lb: LoadBalancer, pool: IPAddressPool | None, workloads: Workloads,
              nodes: Mapping[str, Mapping[str, str]]) -> LoadBalancer:
    """Which nodes may answer for (L2) or announce (BGP) the address: the advertisements selecting its pool."""
    if pool is None or lb.ip is None:
        return lb
    l2 = [a for a in workloads.l2_advertisements if a.spec.selects_pool(pool)]
    bgp = [a for a in workloads.bgp_advertisements if a.spec.selects_pool(pool)]
    l2_nodes = tuple(n for n, labels in nodes.items() if any(a.spec.selects_node(labels) for a in l2))
    bgp_nodes = tuple(n for n, labels in nodes.items() if any(a.spec.selects_node(labels) for a in bgp))
    interfaces: tuple[str, ...] = ()
    if l2 and all(a.spec.interfaces for a in l2):
        interfaces = tuple(dict.fromkeys(i for a in l2 for i in a.spec.interfaces))
    pending = None
    if not l2_nodes and not bgp_nodes:
        pending = f"pool {pool.name} is in no L2Advertisement or BGPAdvertisement (for these nodes): not announced"
    return LoadBalancer(lb.ip, lb.pool, pending, l2_nodes, interfaces, bgp_nodes)
