"""The workload pass of a cluster's plan: its manifests loaded and checked, pods placed, Services
allocated, once, when the plan is loaded; `up`, `apply`, the data plane and DNS use the result.

Besides what the manifests say, it checks what only the lab decides and `up` would fail on:
a pod's network namespace name must fit the kernel's limit, and a node's podCIDR must hold
every pod scheduled on it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from labkit.errors import InputError, Problem
from labkit.k8s import Pod, Workloads, load_workloads
from labkit.k8s import edge, metallb, multus
from labkit.k8s.allocate import Allocation, allocate
from labkit.k8s.nodes import cluster_nodes, place_daemon_sets
from labkit.k8s.system import system_manifests
from labkit.yamldoc import Document
from labkit.topology.plan import NETNS_NAME_MAX, Plan, pod_capacity, pod_netns


def plan_workloads(plan: Plan, doc: Document) -> Plan:
    """`plan` with its workloads and their allocation; InputError (file:line) lists every problem."""
    cluster = plan.cluster
    assert cluster is not None
    data = doc.data if isinstance(doc.data, dict) else {}
    dns = system_manifests(cluster.dns_ips or (cluster.dns_ip,), cluster.dns_replicas)  # one address per family
    sources = list(data.get("workloads") or []) + dns
    base = Path(plan.source).resolve().parent
    workloads = load_workloads(sources, base, origin=doc.file, line_of=doc.line_of)
    edge_problems = edge.edge_problems(workloads)  # Ingresses and HTTPRoutes naming what is not there
    if edge_problems:
        raise InputError(edge_problems)
    if edge.wanted(workloads, cluster.ingress_replicas):  # the ingress controller's pods and Service too
        sources += edge.controller_manifests(workloads, cluster.ingress_replicas, dict(cluster.ingress_annotations))
        workloads = load_workloads(sources, base, origin=doc.file, line_of=doc.line_of)
    workloads = place_daemon_sets(workloads, cluster_nodes([n.name for n in plan.cluster_nodes]))
    nodes = cluster_nodes([n.name for n in plan.cluster_nodes])
    bgp_peers = [(str(p.address), p.asn) for p in cluster.bgp.peers] if cluster.bgp else []
    bgp_peers += [(str(ip.ip), p.asn) for p in (cluster.bgp.peers if cluster.bgp else ()) if p.node is not None
                  and (ip := plan.node(p.node).mgmt_ipv6) is not None]  # a lab router's IPv6 sessions
    problems = metallb.check_config(workloads, pod_cidr=[str(c) for c in cluster.pod_cidrs or (cluster.pod_cidr,)],
                                    service_cidr=[str(c) for c in cluster.service_cidrs or (cluster.service_cidr,)],
                                    bgp_peers=bgp_peers, bgp_asn=cluster.bgp.asn if cluster.bgp else None,
                                    lab_addresses={str(a.ip): f"the address of {n.name}:{i.name}" for n in plan.nodes
                                                   for i in n.interfaces for a in i.addresses})
    if problems:
        raise InputError(problems)
    allocation = allocate(workloads, [n.name for n in plan.cluster_nodes],
                          service_cidr=[str(c) for c in cluster.service_cidrs or (cluster.service_cidr,)],
                          dns_ip=[str(ip) for ip in cluster.dns_ips or (cluster.dns_ip,)],
                          pinned=[n.name for n in plan.pod_hosts if n.kind_info.container_host],
                          node_labels={n.name: n.labels for n in nodes})
    problems = netns_name_problems(plan, workloads) + capacity_problems(plan, workloads, allocation)
    problems += attachment_problems(plan, workloads, allocation)
    if problems:
        raise InputError(list(dict.fromkeys(problems)))
    return dataclasses.replace(plan, workloads=workloads, allocation=allocation)


def _controller(workloads: Workloads, pod: Pod):
    """The controller (Deployment, StatefulSet, ReplicaSet, DaemonSet, Job) that makes `pod`, or None."""
    owner = workloads.owners.get(pod.key)
    if owner is None:
        return None
    kind, _, name = owner.partition("/")
    pool = {"Deployment": workloads.deployments, "StatefulSet": workloads.stateful_sets,
            "ReplicaSet": workloads.replica_sets, "DaemonSet": workloads.daemon_sets, "Job": workloads.jobs}[kind]
    return next((c for c in pool if c.namespace == pod.namespace and c.name == name), None)


def plan_notes(plan: Plan) -> list[str]:
    """What `validate` and `up` say about the manifests besides errors: the objects and the fields
    they accept without acting on them, one line per kind of object and per field."""
    workloads = plan.workloads
    if workloads is None:
        return []
    notes = []
    for obj in workloads.not_acted_on:
        where = obj.origin.problem(("metadata", "name"), "")
        why = f": {obj.why}" if obj.why else ""
        notes.append(f"not acted on: {obj} ({where.file}:{where.line}){why}")
    seen: dict[tuple[str, str], list] = {}
    for unused, origin in workloads.unused_fields:
        if unused.path[-1] == "hostPort" and _published(plan, origin):
            continue  # a docker-host publishes it (portmap)
        seen.setdefault((unused.kind, unused.pattern), []).append(origin.problem(unused.path, ""))
    for (kind, pattern), places in seen.items():
        more = f" and {len(places) - 1} more" if len(places) > 1 else ""
        notes.append(f"field not acted on: {kind} {pattern} ({places[0].file}:{places[0].line}{more})")
    _, _, skipped = edge.served(workloads)  # another controller's Ingresses and Gateways, left alone
    for obj in (*workloads.ingresses, *workloads.gateways):
        if obj.key in skipped:
            where = workloads.problem(obj, ("metadata", "name"), "")
            notes.append(f"not served by labkit's ingress controller: {obj.kind} {obj.key} "
                         f"({where.file}:{where.line}): {skipped[obj.key]}")
    return notes


def _published(plan: Plan, origin) -> bool:
    """Whether every pod of the manifest at `origin` runs on a docker-host, where hostPort is acted on."""
    workloads, allocation = plan.workloads, plan.allocation
    hosts = {n.name for n in plan.pod_hosts if n.kind_info.container_host}
    if workloads is None or allocation is None or not hosts:
        return False
    made = [(kind, ns, name) for (kind, ns, name), o in workloads.origins.items() if o == origin]
    pods = [p.key for p in workloads.pods for kind, ns, name in made if p.namespace == ns
            and ((kind == "Pod" and p.name == name) or workloads.owners.get(p.key) == f"{kind}/{name}")]
    return bool(pods) and all(allocation.placement.get(key) in hosts for key in pods)


def not_acted_on(plan: Plan) -> dict[str, list]:
    """The `not_acted_on` key of `up`'s summary: objects ("Kind ns/name") and fields ("Kind path")."""
    workloads = plan.workloads
    if workloads is None:
        return {"objects": [], "fields": []}
    fields = dict.fromkeys(f"{u.kind} {u.pattern}" for u, origin in workloads.unused_fields
                           if not (u.path[-1] == "hostPort" and _published(plan, origin)))
    return {"objects": [str(o) for o in workloads.not_acted_on], "fields": list(fields)}


def netns_name_problems(plan: Plan, workloads: Workloads) -> list[Problem]:
    """Every pod's namespace `lk-<lab>.<namespace>.<pod>` is a file in /run/netns: at most 255 bytes."""
    problems = []
    for pod in workloads.pods:
        name = pod_netns(plan.lab, pod.namespace, pod.name)
        size = len(name.encode())
        if size <= NETNS_NAME_MAX:
            continue
        controller = _controller(workloads, pod)
        what = f"the name of {controller.kind} {controller.name}" if controller else "the pod's name"
        problems.append(workloads.problem(
            controller or pod, ("metadata", "name"),
            f"too long: pod network namespace 'lk-{plan.lab}.<namespace>.<pod>' would be {size} bytes and "
            f"the kernel allows {NETNS_NAME_MAX}; shorten {what} or its namespace by {size - NETNS_NAME_MAX} "
            "characters or more",
        ))
    return problems


def capacity_problems(plan: Plan, workloads: Workloads, allocation: Allocation) -> list[Problem]:
    """A node's podCIDR gives every pod on it an address: no more pods than it holds."""
    problems = []
    counted: dict[str, int] = {}
    for pod in workloads.pods:
        node = allocation.placement.get(pod.key)
        if node is None:
            continue
        if plan.node(node).kind_info.container_host:
            continue  # Docker's bridge subnet is a /16
        counted[node] = counted.get(node, 0) + 1
        pod_cidr = plan.node(node).pod_cidr
        room = min((pod_capacity(c) for c in plan.node(node).pod_cidrs), default=0)  # the smallest family binds
        if counted[node] != room + 1:
            continue  # report the first pod that does not fit, once per node
        total = allocation.pods_on(node)
        controller = _controller(workloads, pod)
        obj, where = (controller, ("spec", "replicas")) if controller else (pod, ("metadata", "name"))
        problems.append(workloads.problem(
            obj, where,
            f"{total} pods are scheduled on node {node!r}, but its podCIDR {pod_cidr} holds {room}; "
            "run fewer replicas, spread pods with spec.nodeName, or add k8s-nodes",
        ))
    return problems


def attachment_problems(plan: Plan, workloads: Workloads, allocation: Allocation) -> list[Problem]:
    """Pods' `k8s.v1.cni.cncf.io/networks` annotations: networks that exist, interfaces the nodes have."""
    where = ("metadata", "annotations", multus.NETWORKS_ANNOTATION)
    return multus.attachment_problems(
        workloads.pods, workloads.network_attachments, allocation.placement,
        {n.name: [i.name for i in n.interfaces] for n in plan.cluster_nodes},
        lambda pod, message: workloads.problem(pod, where, message),
    )
