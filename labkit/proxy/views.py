"""Service views: every Service with the ClusterIPs and NodePorts the plan allocated and the
endpoints of its running pods; what the data plane and DNS serve. Pure.

Allocation is the plan's (labkit.k8s.allocate): it runs once, when the plan is loaded.

Dual-stack as EndpointSlices have it: a Service's endpoints are kept per address family, one slice
per family of its `ipFamilies`; here a port's `endpoints` hold one `Endpoint` per (pod, family) --
every endpoint of the primary family first, then the secondary's -- and a pod lacking an address of
a family is no endpoint in it. An `EndpointAddress` (headless DNS records) has the pod's addresses
of the Service's families in `ips`, `ip` being the first.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from labkit.families import family_name, family_number, family_of, host_port, pick
from labkit.k8s import Pod, Service, Workloads
from labkit.k8s.allocate import Allocation, ServiceIPs, allocate_node_ports, allocate_service_ips
from labkit.k8s.metallb import LoadBalancer, l2_order


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class Endpoint(_View):
    """One backend of one service port in one family: a ready pod's address and the port it listens on."""

    ip: str
    port: int
    pod: str  # "namespace/name"
    node: str | None = None

    @property
    def family(self) -> int:
        return family_of(self.ip)

    @property
    def address(self) -> str:
        """"ip:port", "[ip6]:port" for IPv6."""
        return host_port(self.ip, self.port)


class EndpointAddress(_View):
    """A ready pod a service selects (headless services get an A/AAAA record per address)."""

    ip: str  # ips[0]
    pod: str
    node: str | None = None
    hostname: str | None = None  # set when the pod's subdomain is this service (StatefulSets)
    ips: tuple[str, ...] = ()  # the pod's addresses of the Service's ipFamilies, in their order

    @model_validator(mode="after")
    def _ips(self) -> EndpointAddress:
        if not self.ips:
            object.__setattr__(self, "ips", (self.ip,))
        return self


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
    cluster_ip: str | None  # None for headless and ExternalName services; else cluster_ips[0]
    headless: bool = False
    # spec.clusterIPs (primary first; empty for headless and ExternalName), spec.ipFamilies ("IPv4", "IPv6";
    # headless Services have them too, ExternalName ones none) and spec.ipFamilyPolicy, as the API fills them
    cluster_ips: tuple[str, ...] = ()
    ip_families: tuple[str, ...] = ()
    ip_family_policy: str | None = None
    external_name: str | None = None
    session_affinity: Literal["None", "ClientIP"] = "None"
    affinity_timeout: int = 10800
    external_traffic_policy: Literal["Cluster", "Local"] = "Cluster"
    ports: tuple[ServicePortView, ...] = ()
    addresses: tuple[EndpointAddress, ...] = ()
    external_ips: tuple[str, ...] = ()  # spec.externalIPs
    load_balancer: dict[str, Any] | None = None  # labkit.k8s.metallb.LoadBalancer.as_status(), for type LoadBalancer
    source_ranges: tuple[str, ...] = ()  # loadBalancerSourceRanges

    @model_validator(mode="after")
    def _cluster_ips(self) -> ServiceView:
        if self.cluster_ip and not self.cluster_ips:
            object.__setattr__(self, "cluster_ips", (self.cluster_ip,))
        if self.cluster_ips and not self.ip_families:
            object.__setattr__(self, "ip_families", tuple(family_name(family_of(ip))
                                                          for ip in self.cluster_ips))
        return self

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def cluster_ip_of(self, family: int) -> str | None:
        """The ClusterIP of one family (4 or 6), if the Service has one."""
        return pick(self.cluster_ips, family)

    @property
    def load_balancer_ip(self) -> str | None:
        return (self.load_balancer or {}).get("ip")

    @property
    def load_balancer_ips(self) -> tuple[str, ...]:
        """The LoadBalancer's addresses (status.loadBalancer.ingress): `ips` when MetalLB gave one per family."""
        found = (self.load_balancer or {}).get("ips") or ((self.load_balancer_ip,) if self.load_balancer_ip else ())
        return tuple(found)

    @property
    def external_addresses(self) -> tuple[str, ...]:
        """Addresses from outside the cluster served as kube-proxy serves them: the LoadBalancer's, externalIPs."""
        return tuple(dict.fromkeys((*self.load_balancer_ips, *self.external_ips)))

    def as_status(self) -> dict[str, Any]:
        """The `services[]` entry of `labkit status --format json`."""
        return {
            "namespace": self.namespace,
            "name": self.name,
            "type": self.type,
            "cluster_ip": "None" if self.headless else self.cluster_ip,
            "cluster_ips": ["None"] if self.headless else list(self.cluster_ips),
            "ip_families": list(self.ip_families),
            "ip_family_policy": self.ip_family_policy,
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
                    "endpoints": [e.address for e in p.endpoints],
                }
                for p in self.ports
            ],
            "endpoints": [
                {"ip": a.ip, "ips": list(a.ips), "pod": a.pod, "node": a.node, "hostname": a.hostname}
                for a in self.addresses
            ],
        }


def build_service_view(
    workloads: Workloads,
    pod_ips: Mapping[str, str | Sequence[str]],
    *,
    allocation: Allocation | None = None,
    service_cidr: str | Sequence[str] | None = None,
    dns_ip: str | Sequence[str] | None = None,
    pod_nodes: Mapping[str, str] | None = None,
) -> tuple[ServiceView, ...]:
    """Every Service with its ClusterIPs, NodePorts and ready endpoints.

    `allocation` is the plan's (`plan.allocation`); without one (tools, tests) ClusterIPs are
    allocated from `service_cidr` (one CIDR or a dual-stack pair) here, raising InputError
    (file:line: field) on conflicts. `pod_ips` maps "namespace/pod" to the pod's IPs (or its one
    IP); a pod without an IP (not up yet) is not an endpoint. `pod_nodes` maps "namespace/pod" to its node.
    """
    if allocation is None:
        if service_cidr is None:
            raise ValueError("build_service_view needs the plan's allocation or a service_cidr")
        allocation = Allocation(service_ips=allocate_service_ips(workloads, service_cidr=service_cidr, dns_ip=dns_ip),
                                node_ports=allocate_node_ports(workloads))
    node_ports = allocation.node_ports
    pod_nodes = pod_nodes or {}
    ips_of = {key: (ips,) if isinstance(ips, str) else tuple(ips) for key, ips in pod_ips.items() if ips}
    labelled = _LabelIndex([p for p in workloads.pods if p.key in ips_of])
    views = []
    for svc in workloads.services:
        spec = svc.spec
        key = (svc.namespace, svc.name)
        found = _service_ips(allocation, key, spec)
        families = tuple(family_number(f) for f in found.families) if found else ()
        selected = _selected(svc, labelled, ips_of)
        addresses = _addresses(svc, selected, ips_of, pod_nodes, families)
        ports = []
        for index, port in enumerate(spec.ports):
            endpoints = () if spec.type == "ExternalName" else _endpoints(selected, port, ips_of, pod_nodes, families)
            ports.append(ServicePortView(
                name=port.name,
                protocol=port.protocol,
                port=port.port,
                target_port=port.target,
                node_port=node_ports.get((svc.namespace, svc.name, index)),
                endpoints=endpoints,
            ))
        cluster_ips = () if found is None or found.headless else found.cluster_ips
        views.append(ServiceView(
            namespace=svc.namespace,
            name=svc.name,
            type=spec.type,
            cluster_ip=cluster_ips[0] if cluster_ips else None,
            headless=spec.headless,
            cluster_ips=cluster_ips,
            ip_families=found.families if found else (),
            ip_family_policy=found.policy if found else None,
            external_name=spec.externalName,
            session_affinity=spec.sessionAffinity,
            affinity_timeout=spec.sessionAffinityConfig.clientIP.timeoutSeconds,
            external_traffic_policy=spec.externalTrafficPolicy,
            ports=tuple(ports),
            addresses=() if spec.type == "ExternalName" else addresses,
            external_ips=spec.externalIPs,
            load_balancer=_load_balancer(allocation.load_balancers.get((svc.namespace, svc.name)), spec, ports),
            source_ranges=tuple(str(ipaddress.ip_network(r.strip(), strict=False))
                                for r in spec.loadBalancerSourceRanges),
        ))
    return tuple(views)


def _service_ips(allocation: Allocation, key: tuple[str, str], spec) -> ServiceIPs | None:
    """The allocation's dual-stack fields of a Service; from its primary ClusterIP alone when the
    allocation has only that (one built by hand), IPv4 for a headless one there."""
    if spec.type == "ExternalName":
        return None
    found = allocation.service_ips.get(key)
    if found is not None:
        return found
    ip = allocation.cluster_ips.get(key)
    if ip is None and not spec.headless:
        return None
    family = family_name(family_of(ip)) if ip else "IPv4"
    return ServiceIPs(policy="SingleStack", families=(family,), cluster_ips=(ip,) if ip else ("None",))


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


def _selected(svc: Service, index: _LabelIndex, pod_ips: Mapping[str, tuple[str, ...]]) -> list[Pod]:
    """Ready pods (labkit treats every running pod as ready) the selector picks, by IP."""
    if not svc.spec.selector:
        return []  # as in Kubernetes: no selector, no managed endpoints
    pods = index.select(svc.namespace, svc.spec.selector)

    def order(pod: Pod) -> tuple:
        ip = ipaddress.ip_address(pod_ips[pod.key][0])
        return ip.version, int(ip), pod.name

    return sorted(pods, key=order)


def _addresses(svc, selected, pod_ips, pod_nodes, families) -> tuple[EndpointAddress, ...]:
    found = []
    for p in selected:
        ips = tuple(ip for ip in (pick(pod_ips[p.key], f) for f in families) if ip)
        if not ips:
            continue  # none of the Service's families: in none of its EndpointSlices
        found.append(EndpointAddress(
            ip=ips[0],
            ips=ips,
            pod=p.key,
            node=pod_nodes.get(p.key) or p.spec.nodeName,
            hostname=p.spec.hostname if p.spec.hostname and p.spec.subdomain == svc.name else None,
        ))
    return tuple(found)


def _endpoints(selected, port, pod_ips, pod_nodes, families) -> tuple[Endpoint, ...]:
    endpoints = []
    for family in families:  # one EndpointSlice per family, the primary's first
        for pod in selected:
            ip = pick(pod_ips[pod.key], family)
            if ip is None:
                continue
            target = port.target
            number = pod.spec.named_port(target, port.protocol) if isinstance(target, str) else target
            if number is None:
                continue  # this pod has no port of that name: not an endpoint for this port
            endpoints.append(Endpoint(
                ip=ip, port=number, pod=pod.key,
                node=pod_nodes.get(pod.key) or pod.spec.nodeName,
            ))
    return tuple(endpoints)


def services_by_key(views: Sequence[ServiceView]) -> dict[str, ServiceView]:
    return {v.key: v for v in views}
