"""Phases `services` and `policies`: the service data plane and NetworkPolicies, in every k8s-node."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from labkit.phases.build import k8s_nodes, on_every_node, workloads_of

if TYPE_CHECKING:
    from labkit.phases.build import Build, PodRecord


def cluster_pods(b: Build, addressed: Callable[[PodRecord], bool]
                 ) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """("ns/pod" -> its IPs (one per cluster family, preferred first) of those `addressed` keeps,
    "ns/pod" -> node) of the pods on the cluster's flat network: a docker-host's containers have
    addresses of its own bridge (the same on every docker-host), so they are no Service endpoints
    and no policy peers."""
    members = {n.name for n in k8s_nodes(b.plan)}
    pods = [p for p in b.pods if p.node in members]
    return ({f"{p.namespace}/{p.name}": tuple(p.ips or [p.ip]) for p in pods if p.ip and addressed(p)},
            {f"{p.namespace}/{p.name}": p.node for p in pods})


def apply_services(b: Build) -> None:
    """Service views from the running pods, then the same kube-proxy tables (one per cluster family) in
    every k8s-node, NodePorts on the node's address of each family.

    On `apply`, `b.previous_services` are the views applied before: UDP flows still pinned to
    endpoints that are gone get cleared from conntrack."""
    from labkit.proxy import apply_node_services, build_service_view

    plan, workloads = b.plan, workloads_of(b.plan)
    if workloads is None or plan.cluster is None:
        return
    from labkit.phases.pods import finished

    pod_ips, pod_nodes = cluster_pods(b, lambda p: not finished(b, p))
    b.services = list(build_service_view(workloads, pod_ips, allocation=plan.allocation, pod_nodes=pod_nodes))
    cluster = plan.cluster
    pod_cidrs = [str(c) for c in cluster.pod_cidrs or (cluster.pod_cidr,)]
    on_every_node(lambda node: apply_node_services(
        b.sandboxes[node.name].netns_path, b.services, pod_cidr=pod_cidrs,
        node_ips=node.node_ips(cluster.families), previous=b.previous_services, node_name=node.name), k8s_nodes(plan))


def apply_policies(b: Build) -> None:
    """NetworkPolicies, compiled per node: egress judged where a pod sends, ingress where it receives.

    Every family of the cluster: a pod's addresses (one per family) share its chains, and the
    node's own addresses (its InternalIPs, one per family) are never judged."""
    from labkit.policy import apply_node_policies, remove_node_policies

    plan, workloads = b.plan, workloads_of(b.plan)
    if workloads is None or not workloads.network_policies:
        if b.previous_services is not None:  # `apply`: the last policy may just have been removed
            for node in k8s_nodes(plan):
                remove_node_policies(b.sandboxes[node.name].netns_path)
        return
    # NetworkPolicy does not apply to hostNetwork pods (they share their node's address with it and each other)
    pod_ips, pod_nodes = cluster_pods(b, lambda p: not p.host_network)
    families = plan.cluster.families if plan.cluster is not None else (4,)
    on_every_node(lambda node: apply_node_policies(
        b.sandboxes[node.name].netns_path, workloads, pod_ips, node_name=node.name, pod_nodes=pod_nodes,
        node_ips=node.node_ips(families)), k8s_nodes(plan))
