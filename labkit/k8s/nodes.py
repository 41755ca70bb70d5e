"""The cluster's nodes as the scheduler sees them (labels, taints), and DaemonSets placed on them. Pure.

Every k8s-node carries the labels the kubelet sets (`kubernetes.io/hostname`, `kubernetes.io/os`,
`kubernetes.io/arch`). The first k8s-node of the topology is the control plane, as the node
`kubeadm init` ran on: it is labelled `node-role.kubernetes.io/control-plane` and, in a cluster of
two nodes or more, tainted `node-role.kubernetes.io/control-plane:NoSchedule` as kubeadm taints it
(a one-node cluster is left untainted, as kind and minikube leave theirs, or it could run nothing).

The taint decides where DaemonSet pods run (one per node whose labels match the template's
`nodeSelector` and whose taints it tolerates). Pods of other controllers are spread over every
node that matches their `nodeSelector`, the control plane included: labkit's scheduler spreads,
it does not keep workloads off the control plane.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from labkit.errors import InputError, Problem
from labkit.k8s import names
from labkit.k8s.load import Origin, Workloads, _safe_encode, template_hash
from labkit.k8s.models import DaemonSet, ObjectMeta, Pod, PodSpec

CONTROL_PLANE = "node-role.kubernetes.io/control-plane"


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str

    def __str__(self) -> str:
        return f"{self.key}{'=' + self.value if self.value else ''}:{self.effect}"


@dataclass(frozen=True)
class ClusterNode:
    """A k8s-node as the API would show it: its name, labels and taints."""

    name: str
    labels: Mapping[str, str]
    taints: tuple[Taint, ...] = ()

    @property
    def control_plane(self) -> bool:
        return CONTROL_PLANE in self.labels


def cluster_nodes(node_names: Sequence[str]) -> list[ClusterNode]:
    """The k8s-nodes in topology order, the first one the control plane."""
    nodes = []
    for index, name in enumerate(node_names):
        labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
        taints: tuple[Taint, ...] = ()
        if index == 0:
            labels[CONTROL_PLANE] = ""
            if len(node_names) > 1:
                taints = (Taint(CONTROL_PLANE, "", "NoSchedule"),)
        nodes.append(ClusterNode(name, labels, taints))
    return nodes


def selects(spec: PodSpec, node: ClusterNode) -> bool:
    """The pod's nodeSelector matches the node's labels."""
    return names.matches_labels(spec.nodeSelector, node.labels)


def tolerates(spec: PodSpec, node: ClusterNode) -> bool:
    """Every NoSchedule/NoExecute taint of the node is tolerated (PreferNoSchedule only prefers)."""
    return all(any(t.tolerates(taint.key, taint.value, taint.effect) for t in spec.tolerations)
               for taint in node.taints if taint.effect in ("NoSchedule", "NoExecute"))


def describe(nodes: Sequence[ClusterNode]) -> str:
    """The nodes' labels and taints, for an error saying that none fits."""
    parts = []
    for node in nodes:
        labels = ",".join(f"{k}={v}" if v else k for k, v in node.labels.items())
        taints = f" taints {','.join(map(str, node.taints))}" if node.taints else ""
        parts.append(f"{node.name} ({labels}{taints})")
    return "; ".join(parts) or "none"


def place_daemon_sets(workloads: Workloads, nodes: Sequence[ClusterNode]) -> Workloads:
    """`workloads` with every DaemonSet's pods: one on each node it fits, its nodeName set.

    A pod's name is `<daemonset>-<5 characters>` derived from the node and the template, so
    it stays the same while both do, and `apply` replaces it when the template changes.
    """
    if not workloads.daemon_sets:
        return workloads
    pods, owners, origins = list(workloads.pods), dict(workloads.owners), dict(workloads.origins)
    taken = {p.key for p in pods}
    problems: list[Problem] = []
    for ds in workloads.daemon_sets:
        origin = origins[("DaemonSet", ds.namespace, ds.name)]
        for pod in daemon_set_pods(ds, nodes):
            if pod.key in taken:
                problems.append(origin.problem(("metadata", "name"),
                                               f"DaemonSet {ds.key} would create pod {pod.name}, which already exists"))
                continue
            taken.add(pod.key)
            pods.append(pod)
            owners[pod.key] = f"DaemonSet/{ds.name}"
            origins[("Pod", pod.namespace, pod.name)] = Origin(origin.document, origin.prefix + ("spec", "template"))
    if problems:
        raise InputError(problems)
    return dataclasses.replace(workloads, pods=tuple(pods), owners=owners, origins=origins)


def daemon_set_pods(ds: DaemonSet, nodes: Sequence[ClusterNode]) -> list[Pod]:
    template = ds.spec.template
    revision = template_hash(template)
    labels = {**template.metadata.labels, "controller-revision-hash": revision, "pod-template-generation": "1"}
    pods = []
    for node in nodes:
        if not (selects(template.spec, node) and tolerates(template.spec, node)):
            continue
        seed = f"{ds.namespace}/{ds.name}/{revision}/{node.name}".encode()
        name = f"{ds.name}-"[:58] + _safe_encode(hashlib.sha256(seed).digest(), 5)
        spec = template.spec.model_copy(update={"nodeName": node.name})
        pods.append(Pod(metadata=ObjectMeta(name=name, namespace=ds.namespace, labels=dict(labels),
                                            annotations=dict(template.metadata.annotations)), spec=spec))
    return pods
