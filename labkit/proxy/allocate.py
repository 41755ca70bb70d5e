"""ClusterIPs, NodePorts and endpoints: what every Service resolves to. Pure.

Allocation is deterministic (a hash of the service's name, probed linearly) so a
lab comes up with the same addresses every time, and adding a Service rarely
moves the others. Addresses a manifest asks for are claimed first and checked.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from labkit.errors import InputError, Problem
from labkit.k8s import Pod, Service, Workloads

NODE_PORT_RANGE = range(30000, 32768)

# The API server gives the first service address to `default/kubernetes`; the DNS
# Service's address is fixed by the topology (`cluster.dns.ip`).
KUBERNETES_SERVICE = ("default", "kubernetes")
DNS_SERVICE = ("kube-system", "kube-dns")


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class Endpoint(_View):
    """One backend of one service port: a ready pod's address and the port it listens on."""

    ip: str
    port: int
    pod: str  # "namespace/name"
    node: str | None = None


class EndpointAddress(_View):
    """A ready pod a service selects (headless services get an A record per address)."""

    ip: str
    pod: str
    node: str | None = None
    hostname: str | None = None  # set when the pod's subdomain is this service (StatefulSets)


class ServicePortView(_View):
    name: str | None
    protocol: Literal["TCP", "UDP"]
    port: int
    target_port: int | str
    node_port: int | None = None
    endpoints: tuple[Endpoint, ...] = ()


class ServiceView(_View):
    """A Service as the data plane and DNS see it: addresses allocated, endpoints resolved."""

    namespace: str
    name: str
    type: Literal["ClusterIP", "NodePort", "ExternalName"]
    cluster_ip: str | None  # None for headless and ExternalName services
    headless: bool = False
    external_name: str | None = None
    session_affinity: Literal["None", "ClientIP"] = "None"
    affinity_timeout: int = 10800
    external_traffic_policy: Literal["Cluster", "Local"] = "Cluster"
    ports: tuple[ServicePortView, ...] = ()
    addresses: tuple[EndpointAddress, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def as_status(self) -> dict[str, Any]:
        """The `services[]` entry of `labkit status --format json`."""
        return {
            "namespace": self.namespace,
            "name": self.name,
            "type": self.type,
            "cluster_ip": "None" if self.headless else self.cluster_ip,
            "external_name": self.external_name,
            "session_affinity": self.session_affinity,
            "external_traffic_policy": self.external_traffic_policy,
            "ports": [
                {
                    "name": p.name,
                    "protocol": p.protocol,
                    "port": p.port,
                    "target_port": p.target_port,
                    "node_port": p.node_port,
                    "endpoints": [f"{e.ip}:{e.port}" for e in p.endpoints],
                }
                for p in self.ports
            ],
            "endpoints": [
                {"ip": a.ip, "pod": a.pod, "node": a.node, "hostname": a.hostname} for a in self.addresses
            ],
        }


def build_service_view(
    workloads: Workloads,
    pod_ips: Mapping[str, str],
    *,
    service_cidr: str,
    dns_ip: str | None = None,
    pod_nodes: Mapping[str, str] | None = None,
) -> tuple[ServiceView, ...]:
    """Every Service with its ClusterIP, NodePorts and ready endpoints.

    `pod_ips` maps "namespace/pod" to the pod's IP; a pod without an IP (not up
    yet) is not an endpoint. `pod_nodes` maps "namespace/pod" to its node.
    Raises InputError (file:line: field) for clusterIP/nodePort conflicts.
    """
    cluster_ips = allocate_cluster_ips(workloads, service_cidr=service_cidr, dns_ip=dns_ip)
    node_ports = allocate_node_ports(workloads)
    pod_nodes = pod_nodes or {}
    labelled = _LabelIndex([p for p in workloads.pods if p.key in pod_ips])
    views = []
    for svc in workloads.services:
        spec = svc.spec
        selected = _selected(svc, labelled, pod_ips)
        addresses = _addresses(svc, selected, pod_ips, pod_nodes)
        ports = []
        for index, port in enumerate(spec.ports):
            endpoints = () if spec.type == "ExternalName" else _endpoints(selected, port, pod_ips, pod_nodes)
            ports.append(ServicePortView(
                name=port.name,
                protocol=port.protocol,
                port=port.port,
                target_port=port.target,
                node_port=node_ports.get((svc.namespace, svc.name, index)),
                endpoints=endpoints,
            ))
        views.append(ServiceView(
            namespace=svc.namespace,
            name=svc.name,
            type=spec.type,
            cluster_ip=cluster_ips.get((svc.namespace, svc.name)),
            headless=spec.headless,
            external_name=spec.externalName,
            session_affinity=spec.sessionAffinity,
            affinity_timeout=spec.sessionAffinityConfig.clientIP.timeoutSeconds,
            external_traffic_policy=spec.externalTrafficPolicy,
            ports=tuple(ports),
            addresses=() if spec.type == "ExternalName" else addresses,
        ))
    return tuple(views)


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
    services = [s for s in workloads.services if s.spec.type == "NodePort"]
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


# ---------------------------------------------------------------- endpoints


class _LabelIndex:
    """Pods by (namespace, label, value): a selector is an intersection, not a scan of every pod."""

    def __init__(self, pods: Sequence[Pod]):
        self.pods = list(pods)
        self.by_label: dict[tuple[str, str, str], set[int]] = {}
        for i, pod in enumerate(self.pods):
            for key, value in pod.labels.items():
                self.by_label.setdefault((pod.namespace, key, value), set()).add(i)

    def select(self, namespace: str, selector: Mapping[str, str]) -> list[Pod]:
        sets = [self.by_label.get((namespace, k, v), set()) for k, v in selector.items()]
        found = set.intersection(*sets) if sets else set()
        return [self.pods[i] for i in sorted(found)]


def _selected(svc: Service, index: _LabelIndex, pod_ips: Mapping[str, str]) -> list[Pod]:
    """Ready pods (labkit treats every running pod as ready) the selector picks, by IP."""
    if not svc.spec.selector:
        return []  # as in Kubernetes: no selector, no managed endpoints
    pods = index.select(svc.namespace, svc.spec.selector)
    return sorted(pods, key=lambda p: (ipaddress.IPv4Address(pod_ips[p.key]), p.name))


def _addresses(svc, selected, pod_ips, pod_nodes) -> tuple[EndpointAddress, ...]:
    return tuple(
        EndpointAddress(
            ip=pod_ips[p.key],
            pod=p.key,
            node=pod_nodes.get(p.key) or p.spec.nodeName,
            hostname=p.spec.hostname if p.spec.hostname and p.spec.subdomain == svc.name else None,
        )
        for p in selected
    )


def _endpoints(selected, port, pod_ips, pod_nodes) -> tuple[Endpoint, ...]:
    endpoints = []
    for pod in selected:
        target = port.target
        number = pod.spec.named_port(target, port.protocol) if isinstance(target, str) else target
        if number is None:
            continue  # this pod has no port of that name: not an endpoint for this port
        endpoints.append(Endpoint(
            ip=pod_ips[pod.key], port=number, pod=pod.key,
            node=pod_nodes.get(pod.key) or pod.spec.nodeName,
        ))
    return tuple(endpoints)


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def services_by_key(views: Sequence[ServiceView]) -> dict[str, ServiceView]:
    return {v.key: v for v in views}
