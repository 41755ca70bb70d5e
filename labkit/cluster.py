"""What the topology loader asks of a cluster before anything is built: its system manifests
(kube-dns) and the workload check. Moving into the plan layer (labkit.topology / labkit.k8s);
the cluster phases of `up` are in labkit.phases.
"""

from __future__ import annotations

from typing import Any

from labkit.topology.plan import Plan

DNS_APP = "kube-dns"
DNS_DEPLOYMENT = "labkit-dns"


def system_manifests(plan: Plan) -> list[dict[str, Any]]:
    """What every cluster runs besides the user's workloads: the cluster DNS, as kubeadm sets it up
    (a kube-system Deployment behind the Service kube-system/kube-dns at `cluster.dns.ip`).

    Its pods' container runs nothing of the image: labkit starts the DNS server from the host
    into each pod's network namespace, so no image needs Python.
    """
    cluster = plan.cluster
    assert cluster is not None
    ports = [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]
    labels = {"k8s-app": DNS_APP}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": DNS_DEPLOYMENT, "namespace": "kube-system", "labels": labels},
         "spec": {"replicas": cluster.dns_replicas, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                      "name": "dns", "image": "labkit/node",
                      "ports": [{"name": p["name"], "containerPort": 53, "protocol": p["protocol"]}
                                for p in ports]}]}}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
         "spec": {"clusterIP": str(cluster.dns_ip), "selector": labels,
                  "ports": [{**p, "targetPort": 53} for p in ports]}},
    ]


def check_workloads(plan: Plan) -> None:
    """What can be checked without building anything: scheduling, ClusterIPs, NodePorts."""
    from labkit.k8s import schedule_pods
    from labkit.proxy import build_service_view

    workloads = plan.workloads[0] if plan.workloads else None
    assert workloads is not None and plan.cluster is not None
    schedule_pods(workloads, [n.name for n in plan.nodes if n.kind == "k8s-node"])
    build_service_view(workloads, {}, service_cidr=str(plan.cluster.service_cidr), dns_ip=str(plan.cluster.dns_ip))
