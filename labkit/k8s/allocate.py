"""What the plan decides for a cluster's workloads, once, before anything runs. Pure.

    allocation = allocate(workloads, ["cp", "w1"], service_cidr="10.96.0.0/16", dns_ip="10.96.0.10")
    allocation.placement["default/web-0"]        # "w1": the node each pod runs on
    allocation.cluster_ips[("default", "web")]   # "10.96.23.7"
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
from labkit.k8s.load import Workloads
from labkit.k8s.metallb import LoadBalancer, allocate_load_balancers
from labkit.k8s.schedule import schedule_pods

NODE_PORT_RANGE = range(30000, 32768)

# The API server gives the first service address to `default/kubernetes`; the DNS
# Service's address is fixed by the topology (`cluster.dns.ip`).
KUBERNETES_SERVICE = ("default", "kubernetes")
DNS_SERVICE = ("kube-system", "kube-dns")


@dataclass(frozen=True)
class Allocation:
    """Where every pod runs and the addresses and ports every Service gets (read-only mappings)."""

    placement: Mapping[str, str] = field(default_factory=dict)  # "namespace/pod" -> node
    cluster_ips: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (namespace, name) -> IP
    node_ports: Mapping[tuple[str, str, int], int] = field(default_factory=dict)  # (ns, name, port index) -> port
    # (namespace, name) -> MetalLB's decision for each type: LoadBalancer Service (labkit.k8s.metallb)
    load_balancers: Mapping[tuple[str, str], LoadBalancer] = field(default_factory=dict)

    def pods_on(self, node: str) -> int:
        return sum(1 for placed in self.placement.values() if placed == node)


def allocate(workloads: Workloads, nodes: Sequence[str], *, service_cidr: str,
             dns_ip: str | None = None, pinned: Sequence[str] = (),
             node_labels: Mapping[str, Mapping[str, str]] | None = None) -> Allocation:
    """Schedule every pod and allocate every ClusterIP and NodePort; InputError lists every problem.
    `pinned` nodes (docker-hosts) run only the pods naming them in spec.nodeName; `node_labels` (each
    k8s-node's labels) are for MetalLB's advertisements' nodeSelectors."""
    problems: list[Problem] = []
    results: list[Mapping] = []
    for step in (lambda: schedule_pods(workloads, nodes, pinned),
                 lambda: allocate_cluster_ips(workloads, service_cidr=service_cidr, dns_ip=dns_ip),
                 lambda: allocate_node_ports(workloads),
                 lambda: allocate_load_balancers(workloads, node_labels or {n: {} for n in nodes})):
        try:
            results.append(step())
        except InputError as exc:
            problems.extend(p for p in exc.problems if isinstance(p, Problem))
            results.append({})
    if problems:
        raise InputError(problems)
    placement, cluster_ips, node_ports, load_balancers = (MappingProxyType(dict(r)) for r in results)
    return Allocation(placement=placement, cluster_ips=cluster_ips, node_ports=node_ports,
                      load_balancers=load_balancers)


# ---------------------------------------------------------------- ClusterIPs


def allocate_cluster_ips(
    workloads: Workloads, *, service_cidr: str, dns_ip: str | None = None
) -> dict[tuple[str, str], str]:
    """(namespace, name) -> ClusterIP for every service that gets one (not headless/ExternalName)."""
    cidr = ipaddress.IPv4Network(service_cidr)
    hosts_first = int(cidr.network_address) + 1
    hosts_last = int(cidr.broadcast_address) - 1
    kubernetes_ip = ipaddress.IPv4Address(hosts_first)
    dns = ipaddress.IPv4Address(dns_ip) if dns_ip else None
    reserved = {kubernetes_ip: KUBERNETES_SERVICE}
    if dns is not None:
        reserved[dns] = DNS_SERVICE
    taken: dict[ipaddress.IPv4Address, tuple[str, str]] = {}
    problems: list[Problem] = []
    wanted = [s for s in workloads.services if s.spec.type != "ExternalName" and not s.spec.headless]

    def valid_hint() -> str:
        skip = f"{kubernetes_ip}" + (f" and {dns}" if dns else "")
        return f"valid: an unused address in service-cidr {cidr} other than {skip}"

    for svc in wanted:
        if not svc.spec.clusterIP:
            continue
        ip = ipaddress.IPv4Address(svc.spec.clusterIP)
        key = (svc.namespace, svc.name)
        where = ("spec", "clusterIP")
        if not hosts_first <= int(ip) <= hosts_last:
            problems.append(workloads.problem(svc, where, f"{ip} is outside service-cidr {cidr}; {valid_hint()}"))
        elif ip in reserved and reserved[ip] != key:
            owner = "the kubernetes service" if reserved[ip] == KUBERNETES_SERVICE else "cluster DNS"
            problems.append(workloads.problem(svc, where, f"{ip} is reserved for {owner}; {valid_hint()}"))
        elif ip in taken:
            problems.append(workloads.problem(
                svc, where, f"{ip} is already allocated to service {'/'.join(taken[ip])}; {valid_hint()}"
            ))
        else:
            taken[ip] = key
    if problems:
        raise InputError(problems)

    result = {key: str(ip) for ip, key in taken.items()}
    for ip, key in reserved.items():
        if key not in result and any((s.namespace, s.name) == key for s in wanted) and ip not in taken:
            result[key] = str(ip)
            taken[ip] = key
    size = hosts_last - hosts_first + 1
    for svc in sorted(wanted, key=lambda s: (s.namespace, s.name)):
        key = (svc.namespace, svc.name)
        if key in result:
            continue
        start = _hash(f"{svc.namespace}/{svc.name}") % size
        for step in range(size):
            ip = ipaddress.IPv4Address(hosts_first + (start + step) % size)
            if ip not in taken and ip not in reserved:
                break
        else:
            raise InputError(workloads.problem(svc, ("metadata", "name"),
                                               f"service-cidr {cidr} has no free address left"))
        taken[ip] = key
        result[key] = str(ip)
    return result


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
