"""The manifests every cluster runs besides the user's workloads: the cluster DNS, as kubeadm
sets it up (a kube-system Deployment behind the Service kube-system/kube-dns at `cluster.dns.ip`,
of each family on a dual-stack cluster).

Its pods' container runs nothing of the image: labkit starts the DNS server from the host
into each pod's network namespace, so no image needs Python.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

DNS_APP = "kube-dns"  # the k8s-app label of the DNS pods, as kubeadm names it
DNS_DEPLOYMENT = "labkit-dns"
DNS_NAMESPACE = "kube-system"


def system_manifests(dns_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | str | Sequence,
                     dns_replicas: int) -> list[dict[str, Any]]:
    """The kube-dns Deployment and Service, as manifest mappings loaded with the user's workloads.

    `dns_ip` is the Service's address, or one per family (the cluster's preferred first): on a
    dual-stack cluster kube-dns is a PreferDualStack Service with both as its clusterIPs."""
    dns_ips = [str(dns_ip)] if isinstance(dns_ip, (str, ipaddress.IPv4Address, ipaddress.IPv6Address)) \
        else [str(ip) for ip in dns_ip]
    addressing: dict[str, Any] = {"clusterIP": dns_ips[0]}
    if len(dns_ips) > 1:
        addressing |= {"clusterIPs": dns_ips, "ipFamilyPolicy": "PreferDualStack"}
    ports = [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]
    labels = {"k8s-app": DNS_APP}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": DNS_DEPLOYMENT, "namespace": DNS_NAMESPACE, "labels": labels},
         "spec": {"replicas": dns_replicas, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                      "name": "dns", "image": "labkit/node",
                      "ports": [{"name": p["name"], "containerPort": 53, "protocol": p["protocol"]}
                                for p in ports]}]}}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "kube-dns", "namespace": DNS_NAMESPACE, "labels": labels},
         "spec": {**addressing, "selector": labels,
                  "ports": [{**p, "targetPort": 53} for p in ports]}},
    ]
