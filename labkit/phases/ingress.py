"""Phase `ingress`: the ingress controller's HAProxy, configured from the Ingresses, HTTPRoutes and
endpoints, started from the host in each proxy pod's network namespace, reloaded by `apply`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labkit import paths
from labkit.k8s import edge
from labkit.phases.build import workloads_of
from labkit.topology.plan import Plan

if TYPE_CHECKING:
    from labkit.phases.build import Build


def with_ingress(plan: Plan) -> bool:
    workloads = plan.workloads
    return plan.cluster is not None and workloads is not None and edge.wanted(workloads, plan.cluster.ingress_replicas)


def folder_of(lab: str) -> str:
    return paths.lab(lab).path("ingress")


def start_ingress(b: Build) -> None:
    """Write the config; reload each proxy pod's HAProxy, or start it where none runs."""
    from labkit.ingress import configure, haproxy

    workloads = workloads_of(b.plan)
    assert workloads is not None
    folder = folder_of(b.plan.lab)
    config, _ = configure(b.plan.lab, workloads, b.services, folder)
    haproxy.check_config(config)
    proxies = [p for p in b.pods if p.namespace == edge.NAMESPACE and p.labels.get("app.kubernetes.io/name")
               == edge.APP_LABEL["app.kubernetes.io/name"]]
    haproxy.stop_others(folder, [p.name for p in proxies])
    for pod in proxies:
        if not haproxy.reload(pod.name, folder):
            haproxy.start(pod.name, pod.netns_path, config, folder)


def ingress_status(b: Build) -> dict | None:
    """`status`'s `ingress`: the controller's Service, its config file, the Ingresses and HTTPRoutes it
    serves (and why any other is not), each backend's servers with their weights."""
    if not with_ingress(b.plan):
        return None
    from labkit.ingress import proxy_config

    workloads = workloads_of(b.plan)
    assert workloads is not None
    table = proxy_config(workloads, b.services)
    return {"service": f"{edge.NAMESPACE}/{edge.NAME}", "controller": "haproxy",
            "config": f"{folder_of(b.plan.lab)}/haproxy.cfg",
            "frontends": [{"port": f.port, "protocol": f.protocol, "routes": len(f.routes)} for f in table.frontends],
            **table.status}
