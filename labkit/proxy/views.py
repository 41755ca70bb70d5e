"""Service views: every Service with the ClusterIP and NodePorts the plan allocated and the
endpoints of its running pods; what the data plane and DNS serve. Pure.

Allocation is the plan's (labkit.k8s.allocate): it runs once, when the plan is loaded.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from labkit.k8s import Pod, Service, Workloads
from labkit.k8s.allocate import Allocation, allocate_cluster_ips, allocate_node_ports
from labkit.k8s.metallb import LoadBalancer, l2_order


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
    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]
    cluster_ip: str | None  # None for headless and ExternalName services
    headless: bool = False
    external_name: str | None = None
    session_affinity: Literal["None", "ClientIP"] = "None"
    affinity_timeout: int = 10800
    external_traffic_policy: Literal["Cluster", "Local"] = "Cluster"
    ports: tuple[ServicePortView, ...] = ()
    addresses: tuple[EndpointAddress, ...] = ()
    external_ips: tuple[str, ...] = ()  # spec.externalIPs
    load_balancer: dict[str, Any] | None = None  # labkit.k8s.metallb.LoadBalancer.as_status(), for type LoadBalancer
    source_ranges: tuple[str, ...] = ()  # loadBalancerSourceRanges

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def load_balancer_ip(self) -> str | None:
        return (self.load_balancer or {}).get("ip")

    @property
    def external_addresses(self) -> tuple[str, ...]:
        """Addresses from outside the cluster served as kube-proxy serves them: the LoadBalancer's, externalIPs."""
        lb = (self.load_balancer_ip,) if self.load_balancer_ip else ()
        return tuple(dict.fromkeys((*lb, *self.external_ips)))

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
            "external_ips": list(self.external_addresses),
            "load_balancer": dict(self.load_balancer) if self.load_balancer else None,
            "load_balancer_source_ranges": list(self.source_ranges),
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
    allocation: Allocation | None = None,
    service_cidr: str | None = None,
    dns_ip: str | None = None,
    pod_nodes: Mapping[str, str] | None = None,
) -> tuple[ServiceView, ...]:
    """Every Service with its ClusterIP, NodePorts and ready endpoints.

    `allocation` is the plan's (`plan.allocation`); without one (tools, tests) ClusterIPs are
    allocated from `service_cidr` here, raising InputError (file:line: field) on conflicts.
    `pod_ips` maps "namespace/pod" to the pod's IP; a pod without an IP (not up
    yet) is not an endpoint. `pod_nodes` maps "namespace/pod" to its node.
    """
    if allocation is None:
        if service_cidr is None:
            raise ValueError("build_service_view needs the plan's allocation or a service_cidr")
        allocation = Allocation(cluster_ips=allocate_cluster_ips(workloads, service_cidr=service_cidr, dns_ip=dns_ip),
                                node_ports=allocate_node_ports(workloads))
    cluster_ips, node_ports = allocation.cluster_ips, allocation.node_ports
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
            external_ips=spec.externalIPs,
            load_balancer=_load_balancer(allocation.load_balancers.get((svc.namespace, svc.name)), spec, ports),
            source_ranges=tuple(str(ipaddress.IPv4Network(r.strip(), strict=False))
                                for r in spec.loadBalancerSourceRanges),
        ))
    return tuple(views)


def _load_balancer(lb: LoadBalancer | None, spec, ports: list[ServicePortView]) -> dict[str, Any] | None:
    """MetalLB's decision, with the nodes that may announce it now that endpoints are known: none without a
    ready endpoint; with externalTrafficPolicy: Local, only nodes holding one. `l2_candidates` are in
    MetalLB's election order: the first whose speaker runs answers ARP."""
    if lb is None:
        return None
    found = lb.as_status()
    nodes_with_endpoints = {e.node for p in ports for e in p.endpoints if e.node}
    has_endpoints = any(p.endpoints for p in ports)

    def eligible(nodes: tuple[str, ...]) -> list[str]:
        if not has_endpoints:
            return []
        return [n for n in nodes if spec.externalTrafficPolicy != "Local" or n in nodes_with_endpoints]

    found["l2_candidates"] = l2_order(eligible(lb.l2_nodes), lb.ip) if lb.ip else []
    found["bgp_announcing"] = eligible(lb.bgp_nodes) if lb.ip else []
    return found


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


def services_by_key(views: Sequence[ServiceView]) -> dict[str, ServiceView]:
    return {v.key: v for v in views}
