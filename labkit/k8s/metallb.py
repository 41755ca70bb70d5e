"""MetalLB in the plan: its configuration objects read as written, and LoadBalancer addresses allocated. Pure.

    IPAddressPool (metallb.io/v1beta1)    addresses (`a-b` ranges and CIDRs, IPv4 and IPv6, in one pool or apart),
                                          autoAssign, avoidBuggyIPs, serviceAllocation (priority, namespaces,
                                          namespace/service selectors)
    L2Advertisement (metallb.io/v1beta1)  which pools are answered for over ARP (IPv4) and NDP (IPv6), from which
                                          nodes, on which interfaces
    BGPAdvertisement (metallb.io/v1beta1) which pools the nodes' BGP daemons announce as /32s and /128s, from
                                          which nodes
    BGPPeer (metallb.io/v1beta2)          a router the nodes peer with: must be one of `cluster.cni.bgp.peers`

What MetalLB's controller does is done once here, when the plan is loaded: each `type: LoadBalancer`
Service gets an address (the one `metallb.io/loadBalancerIPs` or `spec.loadBalancerIP` asks for, else the
first free one of the first pool that may serve it, pools ordered by `serviceAllocation.priority`), or is
left pending with the reason, as MetalLB leaves it. What only the file shows wrong (an address outside
every pool, overlapping pools, a pool inside the pod or service network, a pool or peer that does not
exist) is an error at `validate`. Which node answers for an address is decided at run time (labkit.lb)
by `l2_order`: MetalLB's ordering, a sha256 of `node#ip`, over the nodes whose speaker runs.

Families, as MetalLB does them: a Service gets an address of each of its ipFamilies (its clusterIPs'
families), all from one pool, so a dual-stack Service needs a pool holding both families; with
`ipFamilyPolicy: PreferDualStack` and no pool able to give both, it gets its primary family's alone.
`LoadBalancer.ips` lists them primary family first (`ip` is the first). The L2 election of a
dual-stack Service is by its first address (MetalLB's "the first IP works for both single and
dual stack"): one node answers for both, ARP for the IPv4 one and NDP for the IPv6 one.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictInt, StrictStr, model_validator

from labkit.errors import InputError, Problem
from labkit.families import Family, IPAddress, family_name, family_number, parse_cidrs
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
MAX_POOL_ADDRESSES = 1 << 16  # IPv4 per pool: a lab hands out a few; a /8 would only cost time
# IPv6 ranges are not counted: a /64 is MetalLB's usual IPv6 pool and addresses are handed out lazily, in order.


# ---------------------------------------------------------------- the objects


def parse_addresses(text: str) -> tuple[IPAddress, IPAddress]:
    """A pool's `addresses` item: a CIDR (every address in it, as MetalLB hands them out) or `first-last`,
    IPv4 or IPv6 (both ends of one family)."""
    text = text.strip()
    try:
        if "-" in text:
            first, last = (ipaddress.ip_address(part.strip()) for part in text.split("-", 1))
            if first.version != last.version:
                raise ValueError(f"{first} and {last} are of different families")
            if last < first:  # type: ignore[operator]  # same family, checked above
                raise ValueError(f"{last} comes before {first}")
            return first, last
        net = ipaddress.ip_network(text, strict=True)
        return net.network_address, net.broadcast_address
    except ValueError as exc:
        raise ValueError(f"{text!r} is not valid ({exc}); valid: a CIDR (192.168.10.0/24, fd00:10::/120) or a "
                         "range (192.168.10.10-192.168.10.20, fd00:10::10-fd00:10::20)") from None


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
            if first.version == 4:
                total += int(last) - int(first) + 1
        if total > MAX_POOL_ADDRESSES:
            raise _fail(f"{total} IPv4 addresses; a pool here may hold at most {MAX_POOL_ADDRESSES}", "addresses")
        return self

    def ranges(self) -> list[tuple[IPAddress, IPAddress]]:
        return [parse_addresses(a) for a in self.addresses]

    @property
    def families(self) -> tuple[int, ...]:
        """The families the pool holds addresses of (4, 6 or both), in the order its addresses name them."""
        return tuple(dict.fromkeys(first.version for first, _ in self.ranges()))

    def contains(self, ip: IPAddress) -> bool:
        return any(first.version == ip.version and first <= ip <= last  # type: ignore[operator]
                   for first, last in self.ranges())

    def hosts(self, family: int | None = None) -> Iterator[IPAddress]:
        """Every address the pool hands out (of `family`), in order (avoidBuggyIPs: IPv4 ones ending in .0
        or .255 skipped; MetalLB applies it to IPv4 only)."""
        for first, last in self.ranges():
            if family is not None and first.version != family:
                continue
            for number in range(int(first), int(last) + 1):
                ip = ipaddress.ip_address(number) if first.version == 4 else ipaddress.IPv6Address(number)
                if self.avoidBuggyIPs and ip.version == 4 and ip.packed[3] in (0, 255):
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
    _unused = frozenset({"localPref", "communities", "peers"})  # peers: names checked

    aggregationLength: Annotated[StrictInt, _in_range(32, 32, "prefix lengths (only /32 is acted on)")] = 32
    aggregationLengthV6: Annotated[StrictInt, _in_range(128, 128, "IPv6 prefix lengths (only /128 is acted on)")] = 128
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
            ipaddress.ip_address(self.peerAddress)
        except ValueError:
            raise _fail(f"{self.peerAddress!r} is not valid; valid: an IPv4 or IPv6 address", "peerAddress") from None
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

    ip: str | None  # None: pending; else the first of `ips`
    pool: str | None = None
    pending: str | None = None  # why no address (MetalLB's event on the Service)
    l2_nodes: tuple[str, ...] = ()  # nodes an L2Advertisement lets answer for it (before liveness/Local)
    interfaces: tuple[str, ...] = ()  # () = every interface of the node but lo
    bgp_nodes: tuple[str, ...] = ()  # nodes a BGPAdvertisement lets announce it
    ips: tuple[str, ...] = ()  # one per family the Service got, its primary family first; () = (ip,) or none

    def __post_init__(self) -> None:
        if not self.ips and self.ip is not None:
            object.__setattr__(self, "ips", (self.ip,))

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(m for m, nodes in (("l2", self.l2_nodes), ("bgp", self.bgp_nodes)) if nodes)

    def as_status(self) -> dict:
        return {"ip": self.ip, "ips": list(self.ips), "pool": self.pool, "mode": "+".join(self.modes) or None,
                "pending": self.pending,
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


def check_config(workloads: Workloads, *, pod_cidr: str | Sequence[str], service_cidr: str | Sequence[str],
                 bgp_peers: Sequence[tuple[str, int]] = (), bgp_asn: int | None = None,
                 lab_addresses: Mapping[str, str] | None = None) -> list[Problem]:
    """What the file alone shows wrong with the MetalLB objects (pools overlapping each other, the
    cluster's networks or the lab's own addresses, advertisements naming pools that do not exist, BGP
    without the bgp backend). `pod_cidr`, `service_cidr`: one CIDR or one per family. `lab_addresses`:
    address -> whose it is (a node's interface)."""
    problems: list[Problem] = []
    for pool in workloads.ip_address_pools:
        for ip, owner in sorted((lab_addresses or {}).items()):
            if pool.spec.contains(ipaddress.ip_address(ip)):
                problems.append(workloads.problem(pool, ("spec", "addresses"), f"holds {ip}, {owner}; a speaker "
                                                  "would answer for it: leave the lab's own addresses out"))
    nets = [(what, net) for what, value in (("pod-cidr", pod_cidr), ("service-cidr", service_cidr))
            for net in parse_cidrs(value if isinstance(value, str) else [str(v) for v in value])]
    seen: list[tuple[IPAddressPool, int, IPAddress, IPAddress]] = []
    pool_names = {p.name for p in workloads.ip_address_pools}
    for pool in workloads.ip_address_pools:
        for i, (first, last) in enumerate(pool.spec.ranges()):
            where = ("spec", "addresses", i)
            for what, net in nets:
                if net.version == first.version and first <= net.broadcast_address and net.network_address <= last:
                    problems.append(workloads.problem(pool, where, f"{pool.spec.addresses[i]} overlaps the cluster's "
                                                      f"{what} {net}; valid: addresses outside {what}"))
            for other, j, o_first, o_last in seen:
                if o_first.version == first.version and first <= o_last and o_first <= last:  # type: ignore[operator]
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
    known = {(str(ipaddress.ip_address(addr)), asn) for addr, asn in bgp_peers}
    for peer in workloads.bgp_peers if bgp_asn is not None else ():
        spec = peer.spec
        if (str(ipaddress.ip_address(spec.peerAddress)), spec.peerASN) not in known:
            valid = ", ".join(f"{a} AS {n}" for a, n in bgp_peers) or "none"
            problems.append(workloads.problem(peer, ("spec", "peerAddress"), (
                f"{spec.peerAddress} AS {spec.peerASN} is not one of cluster.cni.bgp.peers ({valid}); the nodes' "
                "one BGP daemon each sessions with those: add it there")))
        elif spec.myASN != bgp_asn:
            problems.append(workloads.problem(peer, ("spec", "myASN"),
                                              f"{spec.myASN} is not the nodes' AS; valid: {bgp_asn} "
                                              "(cluster.cni.bgp.asn)"))
    return problems


def service_families(svc: Service, cluster_families: Sequence[Family] = (4,)) -> tuple[Family, ...]:
    """The families a Service's addresses are of, as the API server defaults them (labkit.k8s.allocate has the
    clusterIPs; this reads the spec when no allocation says): `ipFamilies` as given, else the cluster's
    preferred family; a DualStack policy adds the cluster's other family. Primary family first."""
    spec = svc.spec
    given = [family_number(str(f)) for f in spec.ipFamilies]
    policy = spec.ipFamilyPolicy or ("RequireDualStack" if len(given) > 1 else "SingleStack")
    primary = [f for f in given if f in cluster_families][:1] or list(cluster_families[:1]) or [4]
    if policy == "SingleStack":
        return tuple(primary)
    found = list(dict.fromkeys([*primary, *[f for f in given if f in cluster_families], *cluster_families]))
    return tuple(found[:2])


def allocate_load_balancers(workloads: Workloads, nodes: Mapping[str, Mapping[str, str]], *,
                            cluster_families: Sequence[Family] = (4,),
                            families: Mapping[tuple[str, str], Sequence[Family]] | None = None,
                            policies: Mapping[tuple[str, str], str] | None = None,
                            ) -> dict[tuple[str, str], LoadBalancer]:
    """(namespace, name) -> LoadBalancer for every `type: LoadBalancer` Service; InputError for requests the
    file shows impossible. `nodes`: each k8s-node's labels (for the advertisements' nodeSelectors).
    `families`: (namespace, name) -> the Service's families (4/6, primary first) as its clusterIPs have
    them, `policies` its ipFamilyPolicy as defaulted (labkit.k8s.allocate); a Service they do not name
    gets `service_families(svc, cluster_families)` and its spec's policy."""
    pools = sorted(workloads.ip_address_pools, key=lambda p: (
        p.spec.serviceAllocation is None or p.spec.serviceAllocation.priority is None,
        p.spec.serviceAllocation.priority if p.spec.serviceAllocation and p.spec.serviceAllocation.priority
        is not None else 0, p.name))
    by_name = {p.name: p for p in pools}
    ns_labels = {ns.name: ns.labels for ns in workloads.namespaces}
    problems: list[Problem] = []
    # ip -> [(service key, sharing key, ports)]
    taken: dict[IPAddress, list[tuple[tuple[str, str], str | None, set]]] = {}
    result: dict[tuple[str, str], LoadBalancer] = {}
    services = sorted((s for s in workloads.services if s.spec.type == "LoadBalancer"),
                      key=lambda s: (s.namespace, s.name))

    def families_of(svc: Service) -> tuple[int, ...]:
        given = (families or {}).get((svc.namespace, svc.name))
        return tuple(given) if given else service_families(svc, cluster_families)

    def policy_of(svc: Service) -> str:
        given = (policies or {}).get((svc.namespace, svc.name)) or svc.spec.ipFamilyPolicy
        return str(given) if given else "SingleStack"

    def fits(ip: IPAddress, svc: Service, sharing: str | None) -> str | None:
        """None if `svc` may have `ip`; else who holds it."""
        for owner, their_sharing, ports in taken.get(ip, []):
            if sharing is None or sharing != their_sharing or ports & _ports(svc):
                return "/".join(owner)
        return None

    def done(svc: Service, ips: Sequence[IPAddress], pool: IPAddressPool | None, pending: str | None = None) -> None:
        key = (svc.namespace, svc.name)
        for ip in ips:
            taken.setdefault(ip, []).append((key, sharing_of(svc), _ports(svc)))
        shown = tuple(str(ip) for ip in ips)
        result[key] = _announce(LoadBalancer(shown[0] if shown else None, pool.name if pool else None, pending,
                                             ips=shown), pool, workloads, nodes)

    def sharing_of(svc: Service) -> str | None:
        found = _annotation(svc, SHARING_ANNOTATIONS)
        return found[1] if found else None

    def names(fams: Sequence[Family]) -> str:
        return " and ".join(family_name(f) for f in fams)

    # Called knowing nothing of families (an IPv4 cluster's allocation): IPv4 addresses only, as always.
    legacy = families is None and policies is None and tuple(cluster_families) == (4,)
    wanted: list[tuple[Service, tuple[IPAddress, ...], tuple]] = []
    for svc in services:
        requested = _annotation(svc, LB_IPS_ANNOTATIONS)
        where: tuple = ("metadata", "annotations", requested[0]) if requested else ("spec", "loadBalancerIP")
        text = requested[1] if requested else svc.spec.loadBalancerIP
        if requested and svc.spec.loadBalancerIP:
            problems.append(workloads.problem(svc, where, "set both this and spec.loadBalancerIP; MetalLB "
                                              "refuses the Service: give one"))
            continue
        ips: tuple[IPAddress, ...] = ()
        if text:
            fams = families_of(svc)
            try:
                ips = tuple(ipaddress.ip_address(t.strip()) for t in text.split(",") if t.strip())
                if not ips or len(ips) != len({ip.version for ip in ips}):
                    raise ValueError
            except ValueError:
                problems.append(workloads.problem(svc, where, f"{text!r} is not valid; valid: one address per "
                                                  "family (10.0.0.10, or 10.0.0.10,fd00::10 for a dual-stack "
                                                  "Service)"))
                continue
            if legacy:  # IPv4 only, as before families were known: other addresses are not acted on here
                ips = tuple(ip for ip in ips if ip.version == 4)
                if not ips:
                    wanted.append((svc, (), where))
                    continue
            asked = {ip.version for ip in ips}
            if not asked <= set(fams) or (policy_of(svc) == "RequireDualStack" and asked != set(fams)):
                problems.append(workloads.problem(svc, where, f"{text} is {names(sorted(asked))}, the Service's "
                                                  f"ipFamilies are {names(fams)}; valid: an address of each of "
                                                  "its families"))
                continue
            ips = tuple(sorted(ips, key=lambda ip: fams.index(ip.version)))
        wanted.append((svc, ips, where))
    # Addresses asked for are claimed first, then the others get theirs in (namespace, name) order.
    for svc, ips, where in sorted(wanted, key=lambda w: not w[1]):
        spec = svc.spec
        if spec.loadBalancerClass:
            done(svc, (), None, f"loadBalancerClass {spec.loadBalancerClass!r}: not MetalLB's; "
                                "no controller assigns it an address")
            continue
        named = _annotation(svc, POOL_ANNOTATIONS)
        if named and named[1] not in by_name:
            problems.append(workloads.problem(svc, ("metadata", "annotations", named[0]),
                                              f"no IPAddressPool {named[1]!r}; valid: "
                                              f"{', '.join(by_name) or 'none defined'}"))
            continue
        if ips:
            shown = ",".join(map(str, ips))
            pool = next((p for p in pools if all(p.spec.contains(ip) for ip in ips)), None)
            if pool is None:
                ranges = "; ".join(f"{p.name}: {', '.join(p.spec.addresses)}" for p in pools) or "no pools defined"
                within = "in no IPAddressPool" if len(ips) == 1 else "not all in one IPAddressPool"
                problems.append(workloads.problem(svc, where, f"{shown} is {within} ({ranges}); valid: "
                                                  f"{'an address' if len(ips) == 1 else 'addresses'} of a pool"))
                continue
            if named and named[1] != pool.name:
                problems.append(workloads.problem(svc, where, f"{shown} is in pool {pool.name}, not in {named[1]} "
                                                  "(metallb.io/address-pool)"))
                continue
            holders = [h for ip in ips if (h := fits(ip, svc, sharing_of(svc))) is not None]
            if holders:
                problems.append(workloads.problem(svc, where, f"{shown} is already given to service {holders[0]}; "
                                                  "two Services share an address only with the same "
                                                  "metallb.io/allow-shared-ip and no port in common"))
                continue
            done(svc, ips, pool)
            continue
        if named:
            candidates = [by_name[named[1]]]
        else:
            candidates = [p for p in pools if p.spec.autoAssign and _pool_serves(p, svc, ns_labels)]
        if not candidates:
            done(svc, (), None, "no IPAddressPool may serve it (none defined, none with autoAssign, or "
                                "serviceAllocation excludes it)")
            continue
        fams = families_of(svc)
        # PreferDualStack: both families from one pool if some pool can, else the primary family alone.
        tries = [fams] + ([fams[:1]] if len(fams) > 1 and policy_of(svc) == "PreferDualStack" else [])
        chosen = None
        for want in tries:
            for pool in candidates:
                got = [_free(pool, family, svc, sharing_of(svc), taken, fits) for family in want]
                if all(ip is not None for ip in got):
                    chosen = ([ip for ip in got if ip is not None], pool)
                    break
            if chosen is not None:
                break
        if chosen is None:
            also = f" for {names(fams)}" if len(fams) > 1 or fams != (4,) else ""
            done(svc, (), None, f"no available IPs in pool {', '.join(p.name for p in candidates)}{also}")
        else:
            done(svc, *chosen)
    if problems:
        raise InputError(problems)
    return result


def _free(pool: IPAddressPool, family: int, svc: Service, sharing: str | None,
          taken: Mapping[IPAddress, list], fits: Any) -> IPAddress | None:
    """The pool's address of `family` for `svc`: one already given under its sharing key (MetalLB reuses it),
    else the first free one; None if the pool has none."""
    if family not in pool.spec.families:
        return None
    if sharing:
        for ip, owners in taken.items():
            if ip.version == family and pool.spec.contains(ip) and fits(ip, svc, sharing) is None \
                    and any(o[1] == sharing for o in owners):
                return ip
    return next((ip for ip in pool.spec.hosts(family) if ip not in taken), None)


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
    return LoadBalancer(lb.ip, lb.pool, pending, l2_nodes, interfaces, bgp_nodes, ips=lb.ips)
