"""Which node each pod runs on: `spec.nodeName` when set, otherwise round-robin. Pure.

Like a scheduler that only knows "spread evenly", but reproducible: pods are
taken in manifest order and placed on the least-loaded node, ties broken by the
order the nodes are listed in the topology.
"""

from __future__ import annotations

from collections.abc import Sequence

from labkit.errors import InputError, Problem
from labkit.k8s.load import Workloads


def schedule_pods(workloads: Workloads, nodes: Sequence[str], pinned: Sequence[str] = ()) -> dict[str, str]:
    """"namespace/pod" -> node name for every pod; InputError (file:line) for unknown nodeNames.

    `pinned` nodes (docker-hosts) take only the pods that name them in spec.nodeName."""
    problems: list[Problem] = []
    placement: dict[str, str] = {}
    load = dict.fromkeys(nodes, 0)
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
        placement[pod.key] = wanted
        load[wanted] += 1
    for pod in workloads.pods:
        if pod.spec.nodeName is not None:
            continue
        if not load:
            problems.append(workloads.problem(pod, ("metadata", "name"),
                                              "no k8s-node to run this pod on; add a node of kind k8s-node"))
            break
        node = min(nodes, key=lambda n: load[n])
        placement[pod.key] = node
        load[node] += 1
    if problems:
        raise InputError(list(dict.fromkeys(problems)))  # a Deployment's pods share one template
    return {pod.key: placement[pod.key] for pod in workloads.pods}
