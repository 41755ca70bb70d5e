"""The cluster's HTTP front door in the plan: which Ingresses and Gateways labkit's controller
serves, the ports its proxy listens on, the controller's own manifests (a Deployment of proxy pods
behind a Service), and the problems a manifest alone shows (an Ingress or HTTPRoute naming a
Service, a Service port, a Secret or a Gateway the workloads do not hold).

The proxy itself (HAProxy, run from the host inside the proxy pods) is labkit.ingress.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from labkit.errors import Problem
from labkit.k8s import gateway, ingress
from labkit.k8s.load import Workloads
from labkit.k8s.models import Service

NAMESPACE = "labkit-ingress"
NAME = "haproxy"  # the Deployment and the Service
APP_LABEL = {"app.kubernetes.io/name": "labkit-ingress"}
HTTP_PORT, HTTPS_PORT = 80, 443
NODE_PORTS = {HTTP_PORT: 32080, HTTPS_PORT: 32443}  # fixed, so a topology's checks can name them


@dataclass(frozen=True)
class Frontend:
    """A port the proxy listens on, and how."""

    port: int
    protocol: str  # HTTP | HTTPS

    @property
    def name(self) -> str:
        return f"{self.protocol.lower()}-{self.port}"


def served(workloads: Workloads) -> tuple[list[ingress.Ingress], list[gateway.Gateway], dict[str, str]]:
    """The Ingresses and Gateways labkit's controller serves, and why each other one is not."""
    ingresses, skipped = ingress.served_ingresses(workloads.ingresses, workloads.ingress_classes)
    classes = {c.name: c for c in workloads.gateway_classes}
    gateways = []
    for gw in workloads.gateways:
        cls = classes.get(gw.spec.gatewayClassName)
        if cls is None and not classes and gw.spec.gatewayClassName == ingress.DEFAULT_CLASS:
            gateways.append(gw)  # the class labkit's controller brings when the workloads name none
        elif cls is None:
            skipped[gw.key] = f"no GatewayClass {gw.spec.gatewayClassName!r}"
        elif cls.spec.controllerName != gateway.CONTROLLER:
            skipped[gw.key] = f"class {cls.name} is controller {cls.spec.controllerName}'s, not {gateway.CONTROLLER}"
        else:
            gateways.append(gw)
    return ingresses, gateways, skipped


def wanted(workloads: Workloads, replicas: int | None) -> bool:
    """Whether the controller runs: `cluster.ingress` asks for it, or the workloads hold an Ingress
    or a Gateway it serves (one of another controller's class is left alone, as in a cluster)."""
    if replicas is not None:
        return True
    ingresses, gateways, _ = served(workloads)
    return bool(ingresses or gateways)


def tls_secret_names(workloads: Workloads) -> bool:
    ingresses, _, _ = served(workloads)
    return any(t.secretName for ing in ingresses for t in ing.spec.tls)


def frontends(workloads: Workloads) -> list[Frontend]:
    """Port 80 (and 443 when an Ingress has TLS) for Ingresses; every served Gateway's listener ports."""
    found = {HTTP_PORT: "HTTP"}
    if tls_secret_names(workloads):
        found[HTTPS_PORT] = "HTTPS"
    _, gateways, _ = served(workloads)
    for gw in gateways:
        for listener in gw.spec.listeners:
            found.setdefault(listener.port, listener.protocol)
    return [Frontend(port, protocol) for port, protocol in sorted(found.items())]


def controller_manifests(workloads: Workloads, replicas: int | None,
                         annotations: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The ingress controller: a Deployment of proxy pods (their container only sleeps: labkit runs
    HAProxy from the host in each pod's network namespace) and its Service: NodePort, or LoadBalancer
    when the workloads hold a MetalLB address pool (`annotations` go on it: a pool, an address)."""
    service_type = "LoadBalancer" if workloads.ip_address_pools else "NodePort"
    ports = frontends(workloads)
    template = {"metadata": {"labels": APP_LABEL}, "spec": {"containers": [{
        "name": "haproxy", "image": "labkit/node", "command": ["sleep", "infinity"],
        "ports": [{"name": f.name, "containerPort": f.port} for f in ports]}]}}
    service_ports = []
    for f in ports:
        port: dict[str, Any] = {"name": f.name, "port": f.port, "targetPort": f.port}
        if f.port in NODE_PORTS:
            port["nodePort"] = NODE_PORTS[f.port]
        service_ports.append(port)
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": APP_LABEL},
         "spec": {"replicas": replicas or 1, "selector": {"matchLabels": APP_LABEL}, "template": template}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": APP_LABEL, "annotations": annotations or {}},
         "spec": {"type": service_type, "selector": APP_LABEL, "ports": service_ports}},
    ]


# ---------------------------------------------------------------- what the file alone shows


def _service(workloads: Workloads, namespace: str, name: str) -> Service | None:
    return next((s for s in workloads.services if s.namespace == namespace and s.name == name), None)


def _port_problem(service: Service | None, namespace: str, name: str, port: int | str) -> tuple[int, str] | None:
    """(0: the name, 1: the port) and what is wrong, or None."""
    if service is None:
        return 0, f"no Service {namespace}/{name} in the workloads"
    if service.spec.type == "ExternalName":
        return 0, f"Service {namespace}/{name} is ExternalName; labkit's proxy routes to endpoints"
    if not any(p.port == port or (p.name is not None and p.name == port) for p in service.spec.ports):
        valid = ", ".join(str(p.port) + (f" ({p.name})" if p.name else "") for p in service.spec.ports)
        return 1, f"Service {namespace}/{name} has no port {port!r}; valid: {valid}"
    return None


def _tls_secret(workloads: Workloads, namespace: str, name: str) -> bool:
    return any(s.namespace == namespace and s.name == name for s in workloads.tls_secrets)


def _ingress_backends(ing: ingress.Ingress) -> Iterator[tuple[tuple, ingress.IngressBackend]]:
    if ing.spec.defaultBackend is not None:
        yield ("spec", "defaultBackend"), ing.spec.defaultBackend
    for i, rule in enumerate(ing.spec.rules):
        for j, path in enumerate(rule.http.paths if rule.http else ()):
            yield ("spec", "rules", i, "http", "paths", j, "backend"), path.backend


def edge_problems(workloads: Workloads) -> list[Problem]:
    """Every reference of a served Ingress or Gateway object that the workloads cannot satisfy."""
    problems = []
    ingresses, gateways, _ = served(workloads)
    for ing in ingresses:
        for at, backend in _ingress_backends(ing):
            svc = backend.service
            assert svc is not None
            found = _port_problem(_service(workloads, ing.namespace, svc.name), ing.namespace, svc.name,
                                  svc.port.ref)
            if found:
                field = ("service", "name") if found[0] == 0 else ("service", "port")
                problems.append(workloads.problem(ing, at + field, found[1]))
        for i, tls in enumerate(ing.spec.tls):
            if tls.secretName and not _tls_secret(workloads, ing.namespace, tls.secretName):
                problems.append(workloads.problem(ing, ("spec", "tls", i, "secretName"),
                                                  f"no Secret {ing.namespace}/{tls.secretName} of type "
                                                  f"{ingress.TLS_TYPE} in the workloads"))
    for gw in gateways:
        for i, listener in enumerate(gw.spec.listeners):
            for j, ref in enumerate(listener.tls.certificateRefs if listener.tls else ()):
                namespace = ref.namespace or gw.namespace
                if not _tls_secret(workloads, namespace, ref.name):
                    problems.append(workloads.problem(
                        gw, ("spec", "listeners", i, "tls", "certificateRefs", j, "name"),
                        f"no Secret {namespace}/{ref.name} of type {ingress.TLS_TYPE} in the workloads"))
    ports = {f.port: f.protocol for f in _ingress_frontends(workloads)}
    for gw in gateways:
        for i, listener in enumerate(gw.spec.listeners):
            if ports.setdefault(listener.port, listener.protocol) != listener.protocol:
                problems.append(workloads.problem(
                    gw, ("spec", "listeners", i, "protocol"),
                    f"port {listener.port} is {ports[listener.port]} on labkit's proxy already (Ingresses or "
                    "another Gateway); valid: the same protocol, or another port"))
    names = {(g.namespace, g.name) for g in workloads.gateways}
    for route in workloads.http_routes:
        for i, parent in enumerate(route.spec.parentRefs):
            if (parent.namespace or route.namespace, parent.name) not in names:
                problems.append(workloads.problem(route, ("spec", "parentRefs", i, "name"),
                                                  f"no Gateway {parent.namespace or route.namespace}/{parent.name} "
                                                  "in the workloads"))
        for i, rule in enumerate(route.spec.rules):
            for j, ref in enumerate(rule.backendRefs):
                namespace = ref.namespace or route.namespace
                found = _port_problem(_service(workloads, namespace, ref.name), namespace, ref.name, ref.port or 0)
                if found:
                    field = "name" if found[0] == 0 else "port"
                    problems.append(workloads.problem(route, ("spec", "rules", i, "backendRefs", j, field), found[1]))
    return problems


def _ingress_frontends(workloads: Workloads) -> list[Frontend]:
    found = [Frontend(HTTP_PORT, "HTTP")]
    if tls_secret_names(workloads):
        found.append(Frontend(HTTPS_PORT, "HTTPS"))
    return found
