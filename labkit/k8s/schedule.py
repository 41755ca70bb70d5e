"""Which node each pod runs on: `spec.nodeName` when set, otherwise round-robin. Pure.

Like a scheduler that only knows "spread evenly", but reproducible: pods are
taken in manifest order and placed on the least-loaded node whose labels match
their `nodeSelector` (labkit.k8s.nodes), ties broken by the order the nodes are
listed in the topology.
"""

from __future__ import annotations

from collections.abc import Sequence

from labkit.errors import InputError, Problem
from labkit.k8s.load import Workloads
from labkit.k8s.nodes import cluster_nodes, describe, selects


def schedule_pods(workloads: Workloads, nodes: Sequence[str], pinned: Sequence[str] = ()) -> dict[str, str]:
    """"namespace/pod" -> node name for every pod; InputError (file:line) for unknown nodeNames.

    `pinned` nodes (docker-hosts) take only the pods that name them in spec.nodeName."""
    problems: list[Problem] = []
    placement: dict[str, str] = {}
    load = dict.fromkeys(nodes, 0)
    labelled = {n.name: n for n in cluster_nodes(nodes)}
    for pod in workloads.pods:
        wanted = pod.spec.nodeName
        if wanted is None:
            continue
        if wanted in pinned:
            placement[pod.key] = wanted
            continue
        if wanted not in load:
            valid = ", ".join([*nodes, *pinned]) if nodes or pinned else "none (the topology has no k8s-node)"
            problems.append(workloads.problem(pod, ("spec", "nodeName"),
                                              f"no k8s-node named {wanted!r}; valid: {valid}"))
            continue
        if not selects(pod.spec, labelled[wanted]):
            problems.append(workloads.problem(pod, ("spec", "nodeSelector"),
                                              f"node {wanted!r} (spec.nodeName) does not match it; its labels: "
                                              f"{describe([labelled[wanted]])}"))
            continue
        placement[pod.key] = wanted
        load[wanted] += 1
    for pod in workloads.pods:
        if pod.spec.nodeName is not None:
            continue
        if not load:
            problems.append(workloads.problem(pod, ("metadata", "name"),
                                              "no k8s-node to run this pod on; add a node of kind k8s-node"))
            break
        fitting = [n for n in nodes if selects(pod.spec, labelled[n])]
        if not fitting:
            problems.append(workloads.problem(pod, ("spec", "nodeSelector"),
                                              f"no k8s-node has these labels; valid: labels of the nodes: "
                                              f"{describe(list(labelled.values()))}"))
            continue
        node = min(fitting, key=lambda n: load[n])
        placement[pod.key] = node
        load[node] += 1
    if problems:
        raise InputError(list(dict.fromkeys(problems)))  # a Deployment's pods share one template
    return {pod.key: placement[pod.key] for pod in workloads.pods}


def pick_node(pod_spec, load: dict[str, int]) -> str:
    """Where `apply` starts a new pod: its nodeName, else the least-loaded node its nodeSelector matches."""
    if pod_spec.nodeName:
        return pod_spec.nodeName
    labelled = {n.name: n for n in cluster_nodes(list(load))}
    fitting = [n for n in load if selects(pod_spec, labelled[n])] or list(load)
    return min(fitting, key=lambda n: load[n])
