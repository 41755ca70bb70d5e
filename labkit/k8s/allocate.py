"""What the plan decides for a cluster's workloads, once, before anything runs. Pure.

    allocation = allocate(workloads, ["cp", "w1"], service_cidr="10.96.0.0/16", dns_ip="10.96.0.10")
    allocation.placement["default/web-0"]        # "w1": the node each pod runs on
    allocation.cluster_ips[("default", "web")]   # "10.96.23.7": the primary family's
    allocation.service_ips[("default", "web")]   # ServiceIPs("SingleStack", ("IPv4",), ("10.96.23.7",))
    allocation.node_ports[("default", "web", 0)] # 30080

Allocation is deterministic (a hash of the service's name, probed linearly) so a
lab comes up with the same addresses every time, and adding a Service rarely
moves the others. Addresses a manifest asks for are claimed first and checked.
The service data plane (labkit.proxy) and DNS consume the result; they never
allocate again.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from labkit.errors import InputError, Problem
from labkit.families import family_name, family_number, family_of, parse_cidrs, pick
from labkit.k8s.load import Workloads
from labkit.k8s.metallb import LoadBalancer, allocate_load_balancers
from labkit.k8s.schedule import schedule_pods

NODE_PORT_RANGE = range(30000, 32768)

# The API server gives the first service address to `default/kubernetes`; the DNS
# Service's address is fixed by the topology (`cluster.dns.ip`). Per family, on a dual-stack cluster.
KUBERNETES_SERVICE = ("default", "kubernetes")
DNS_SERVICE = ("kube-system", "kube-dns")


@dataclass(frozen=True)
class Allocation:
    """Where every pod runs and the addresses and ports every Service gets (read-only mappings)."""

    placement: Mapping[str, str] = field(default_factory=dict)  # "namespace/pod" -> node
    cluster_ips: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (namespace, name) -> primary IP
    # (namespace, name) -> ipFamilyPolicy, ipFamilies and clusterIPs (every family), for all but ExternalName
    service_ips: Mapping[tuple[str, str], ServiceIPs] = field(default_factory=dict)
    node_ports: Mapping[tuple[str, str, int], int] = field(default_factory=dict)  # (ns, name, port index) -> port
    # (namespace, name) -> MetalLB's decision for each type: LoadBalancer Service (labkit.k8s.metallb)
    load_balancers: Mapping[tuple[str, str], LoadBalancer] = field(default_factory=dict)

    def pods_on(self, node: str) -> int:
        return sum(1 for placed in self.placement.values() if placed == node)


def allocate(workloads: Workloads, nodes: Sequence[str], *, service_cidr: str | Sequence[str],
             dns_ip: str | Sequence[str] | None = None, pinned: Sequence[str] = (),
             node_labels: Mapping[str, Mapping[str, str]] | None = None) -> Allocation:
    """Schedule every pod and allocate every ClusterIP and NodePort; InputError lists every problem.
    `pinned` nodes (docker-hosts) run only the pods naming them in spec.nodeName; `node_labels` (each
    k8s-node's labels) are for MetalLB's advertisements' nodeSelectors."""
    problems: list[Problem] = []
    results: list[Mapping] = []
    cidrs = parse_cidrs(service_cidr if isinstance(service_cidr, str) else list(service_cidr))

    def load_balancers() -> Mapping:
        """MetalLB's addresses: of each family a Service's clusterIPs have (the step before), as MetalLB
        gives a dual-stack Service one of each where its pools allow."""
        service_ips: Mapping[tuple[str, str], ServiceIPs] = results[1]
        return allocate_load_balancers(
            workloads, node_labels or {n: {} for n in nodes}, cluster_families=tuple(c.version for c in cidrs),
            families={k: tuple(family_number(f) for f in v.families) for k, v in service_ips.items()},
            policies={k: v.policy for k, v in service_ips.items()})

    for step in (lambda: schedule_pods(workloads, nodes, pinned),
                 lambda: allocate_service_ips(workloads, service_cidr=service_cidr, dns_ip=dns_ip),
                 lambda: allocate_node_ports(workloads),
                 load_balancers):
        try:
            results.append(step())
        except InputError as exc:
            problems.extend(p for p in exc.problems if isinstance(p, Problem))
            results.append({})
    if problems:
        raise InputError(problems)
    placement, service_ips, node_ports, load_balancers = (MappingProxyType(dict(r)) for r in results)
    cluster_ips = MappingProxyType({k: v.cluster_ips[0] for k, v in service_ips.items() if not v.headless})
    return Allocation(placement=placement, cluster_ips=cluster_ips, service_ips=service_ips, node_ports=node_ports,
                      load_balancers=load_balancers)


# ---------------------------------------------------------------- ClusterIPs


@dataclass(frozen=True)
class ServiceIPs:
    """A Service's dual-stack fields as the API server fills them in on create."""

    policy: str  # spec.ipFamilyPolicy: SingleStack | PreferDualStack | RequireDualStack
    families: tuple[str, ...]  # spec.ipFamilies, primary first: ("IPv4",), ("IPv6", "IPv4") ...
    cluster_ips: tuple[str, ...]  # spec.clusterIPs in ipFamilies' order; ("None",) for a headless Service

    @property
    def headless(self) -> bool:
        return self.cluster_ips == ("None",)


@dataclass(frozen=True)
class _Pool:
    """One family's service CIDR: the addresses it hands out and the two it keeps for well-known Services."""

    cidr: ipaddress.IPv4Network | ipaddress.IPv6Network
    dns: ipaddress.IPv4Address | ipaddress.IPv6Address | None

    @property
    def family(self) -> str:
        return family_name(self.cidr.version)

    @property
    def first(self) -> int:
        return int(self.cidr.network_address) + 1  # the network's own address is never handed out

    @property
    def last(self) -> int:
        # as the API server's allocator: IPv4 keeps its broadcast address back, IPv6 has none
        return int(self.cidr.broadcast_address) - (1 if self.cidr.version == 4 else 0)

    @property
    def kubernetes(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return self.address(self.first)

    def address(self, number: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return ipaddress.IPv4Address(number) if self.cidr.version == 4 else ipaddress.IPv6Address(number)

    def reserved(self) -> dict:
        found = {self.kubernetes: KUBERNETES_SERVICE}
        if self.dns is not None:
            found[self.dns] = DNS_SERVICE
        return found

    def hint(self) -> str:
        skip = f"{self.kubernetes}" + (f" and {self.dns}" if self.dns else "")
        return f"valid: an unused address in service-cidr {self.cidr} other than {skip}"


def _pools(service_cidr: str | Sequence[str], dns_ip: str | Sequence[str] | None) -> tuple[_Pool, ...]:
    dns = [] if dns_ip is None else [dns_ip] if isinstance(dns_ip, str) else list(dns_ip)
    dns_ips = [ipaddress.ip_address(str(ip)) for ip in dns if ip]
    return tuple(_Pool(n, pick(dns_ips, n.version)) for n in parse_cidrs(service_cidr))


def service_families(spec, cluster: Mapping[str, str]) -> tuple[str, tuple[str, ...], list[tuple[tuple, str]]]:
    """(ipFamilyPolicy, ipFamilies, problems) of a Service that is not ExternalName, defaulted as the API
    server's allocator does (initIPFamilyFields) on a cluster whose service CIDRs are `cluster`
    ({"IPv4": "10.96.0.0/16", ...}, the preferred family first). Each problem is (path, message)."""
    requested = spec.requested_cluster_ips
    selectorless_headless = spec.headless and not spec.selector
    policy = spec.ipFamilyPolicy or ("RequireDualStack" if selectorless_headless else "SingleStack")
    families = list(spec.ipFamilies)
    problems: list[tuple[tuple, str]] = []
    if policy == "SingleStack":  # defaulted too: two addresses or families need a dual-stack policy named
        for what, field, items in (("cluster IPs", "clusterIPs", requested), ("IP families", "ipFamilies",
                                                                                 spec.ipFamilies)):
            if len(items) == 2:
                problems.append((("spec", field), f"two {what} need ipFamilyPolicy RequireDualStack or "
                                                  "PreferDualStack (SingleStack is the default)"))
    if problems:
        return policy, tuple(families), problems
    offered = f"(service-cidr {','.join(cluster.values())})"
    first = next(iter(cluster))
    for i, ip in enumerate(requested):
        if ip == "None":
            break
        family = family_name(family_of(ip))
        if i < len(families):
            continue
        if family not in cluster:
            where = ("spec", "clusterIPs", i) if spec.clusterIPs else ("spec", "clusterIP")
            problems.append((where, f"{ip}: {family} is not configured on this cluster {offered}; "
                                    f"valid: an address in {' or '.join(cluster.values())}"))
        else:
            families.append(family)
    if problems:
        return policy, tuple(families), problems
    if selectorless_headless:
        # The API's one exception: a headless Service without a selector may name both families
        # even on a single-stack cluster (its endpoints are someone else's to write).
        families = families or [first]
        if len(families) < 2 and policy != "SingleStack":
            families.append("IPv6" if families[0] == "IPv4" else "IPv4")
        return policy, tuple(families), []
    if policy == "RequireDualStack" and len(cluster) < 2:
        problems.append((("spec", "ipFamilyPolicy"),
                         f"RequireDualStack: this cluster is not configured for dual-stack services {offered}; "
                         "valid: SingleStack or PreferDualStack, or a dual-stack cluster (cluster.service-cidr "
                         "with an IPv4 and an IPv6 CIDR, e.g. 10.96.0.0/16,fd00:10:96::/112)"))
    for i, family in enumerate(families):
        if family not in cluster:
            problems.append((("spec", "ipFamilies", i),
                             f"{family} is not configured on this cluster {offered}; valid: {' or '.join(cluster)}"))
    if problems:
        return policy, tuple(families), problems
    families = families or [first]
    if policy != "SingleStack" and len(families) == 1 and len(cluster) == 2:
        families.append("IPv6" if families[0] == "IPv4" else "IPv4")
    return policy, tuple(families), []


def allocate_service_ips(
    workloads: Workloads, *, service_cidr: str | Sequence[str], dns_ip: str | Sequence[str] | None = None
) -> dict[tuple[str, str], ServiceIPs]:
    """(namespace, name) -> ipFamilyPolicy, ipFamilies and clusterIPs of every Service but ExternalName ones.

    `service_cidr` is the cluster's service CIDR, or its pair (preferred family first); `dns_ip` the DNS
    Service's address, or one per family. Per family, `default/kubernetes` gets the CIDR's first address
    and `kube-system/kube-dns` the DNS address; every other Service an address from a hash of its name,
    probed linearly, so addresses are the same on every `up`. InputError lists every problem."""
    pools = {p.family: p for p in _pools(service_cidr, dns_ip)}
    cluster = {family: str(pool.cidr) for family, pool in pools.items()}
    problems: list[Problem] = []
    decided: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {}
    for svc in workloads.services:
        if svc.spec.type == "ExternalName":
            continue
        policy, families, found = service_families(svc.spec, cluster)
        problems.extend(workloads.problem(svc, where, message) for where, message in found)
        if not found:
            decided[(svc.namespace, svc.name)] = (policy, families)
    wanted = [s for s in workloads.services if (s.namespace, s.name) in decided and not s.spec.headless]

    reserved = {ip: key for pool in pools.values() for ip, key in pool.reserved().items()}
    taken: dict = {}  # address -> (namespace, name)
    addresses: dict[tuple[str, str], dict[str, str]] = {}  # (namespace, name) -> family -> address
    for svc in wanted:
        key = (svc.namespace, svc.name)
        for i, text in enumerate(svc.spec.requested_cluster_ips):
            ip = ipaddress.ip_address(text)
            pool = pools[family_name(ip.version)]
            where = ("spec", "clusterIPs", i) if svc.spec.clusterIPs else ("spec", "clusterIP")
            if not pool.first <= int(ip) <= pool.last:
                problems.append(workloads.problem(svc, where, f"{ip} is outside service-cidr {pool.cidr}; "
                                                              f"{pool.hint()}"))
            elif ip in reserved and reserved[ip] != key:
                owner = "the kubernetes service" if reserved[ip] == KUBERNETES_SERVICE else "cluster DNS"
                problems.append(workloads.problem(svc, where, f"{ip} is reserved for {owner}; {pool.hint()}"))
            elif ip in taken:
                problems.append(workloads.problem(
                    svc, where, f"{ip} is already allocated to service {'/'.join(taken[ip])}; {pool.hint()}"
                ))
            else:
                taken[ip] = key
                addresses.setdefault(key, {})[pool.family] = str(ip)
    if problems:
        raise InputError(problems)

    for ip, key in reserved.items():
        family = family_name(ip.version)
        if key in decided and family in decided[key][1] and family not in addresses.get(key, {}) \
                and ip not in taken and any((s.namespace, s.name) == key for s in wanted):
            taken[ip] = key
            addresses.setdefault(key, {})[family] = str(ip)
    for svc in sorted(wanted, key=lambda s: (s.namespace, s.name)):
        key = (svc.namespace, svc.name)
        for family in decided[key][1]:
            if family in addresses.get(key, {}):
                continue
            pool = pools[family]
            size = pool.last - pool.first + 1
            start = _hash(f"{svc.namespace}/{svc.name}") % size
            for step in range(size):
                ip = pool.address(pool.first + (start + step) % size)
                if ip not in taken and ip not in reserved:
                    break
            else:
                raise InputError(workloads.problem(svc, ("metadata", "name"),
                                                   f"service-cidr {pool.cidr} has no free address left"))
            taken[ip] = key
            addresses.setdefault(key, {})[family] = str(ip)
    served = {(s.namespace, s.name) for s in wanted}
    return {key: ServiceIPs(policy=policy, families=families,
                            cluster_ips=tuple(addresses[key][f] for f in families) if key in served else ("None",))
            for key, (policy, families) in decided.items()}


def allocate_cluster_ips(
    workloads: Workloads, *, service_cidr: str | Sequence[str], dns_ip: str | Sequence[str] | None = None
) -> dict[tuple[str, str], str]:
    """(namespace, name) -> primary ClusterIP (clusterIPs[0]) for every Service that gets one (not headless
    or ExternalName); see `allocate_service_ips`."""
    return {key: found.cluster_ips[0] for key, found in
            allocate_service_ips(workloads, service_cidr=service_cidr, dns_ip=dns_ip).items() if not found.headless}


# ---------------------------------------------------------------- NodePorts


def allocate_node_ports(workloads: Workloads) -> dict[tuple[str, str, int], int]:
    """(namespace, name, port index) -> nodePort for every port of every NodePort service."""
    taken: dict[int, tuple[str, str]] = {}
    used_in_service: set[tuple[str, str, int, str]] = set()
    result: dict[tuple[str, str, int], int] = {}
    problems: list[Problem] = []
    services = [s for s in workloads.services if s.spec.node_ports]
    for svc in services:
        key = (svc.namespace, svc.name)
        for index, port in enumerate(svc.spec.ports):
            if port.nodePort is None:
                continue
            owner = taken.get(port.nodePort)
            where = ("spec", "ports", index, "nodePort")
            if owner is not None and owner != key:
                problems.append(workloads.problem(
                    svc, where, f"{port.nodePort} is already allocated to service {'/'.join(owner)}; "
                    f"valid: an unused port in {NODE_PORT_RANGE.start}-{NODE_PORT_RANGE.stop - 1}",
                ))
                continue
            if (*key, port.nodePort, port.protocol) in used_in_service:
                problems.append(workloads.problem(
                    svc, where, f"{port.protocol}/{port.nodePort} is used twice in this service"
                ))
                continue
            taken[port.nodePort] = key
            used_in_service.add((*key, port.nodePort, port.protocol))
            result[(*key, index)] = port.nodePort
    if problems:
        raise InputError(problems)
    size = len(NODE_PORT_RANGE)
    for svc in sorted(services, key=lambda s: (s.namespace, s.name)):
        for index, port in enumerate(svc.spec.ports):
            if (svc.namespace, svc.name, index) in result:
                continue
            start = _hash(f"{svc.namespace}/{svc.name}/{port.protocol}/{port.port}") % size
            for step in range(size):
                candidate = NODE_PORT_RANGE.start + (start + step) % size
                if candidate not in taken:
                    break
            else:
                raise InputError(workloads.problem(svc, ("spec", "ports", index, "nodePort"),
                                                   "no free node port left"))
            taken[candidate] = (svc.namespace, svc.name)
            result[(svc.namespace, svc.name, index)] = candidate
    return result



def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
