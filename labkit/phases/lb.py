"""Phase `load balancers`: LoadBalancer addresses announced MetalLB's way, once the services are in place.

L2: every k8s-node runs a speaker (as MetalLB's speaker DaemonSet) whose config lists each address with
its candidates in election order; `up` returns once every address with a candidate is answered for.
BGP: the nodes' BIRD daemons get each address as a /32 to announce (labkit.bgp's `announce`), from every
node a BGPAdvertisement selects (externalTrafficPolicy: Local: those with an endpoint), and are told to
re-read their configs. `apply` does the same again: speakers re-read their configs, a dead one restarts.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from labkit import paths
from labkit.phases.build import k8s_nodes
from labkit.topology.plan import Plan

if TYPE_CHECKING:
    from labkit.phases.build import Build


def with_load_balancers(plan: Plan) -> bool:
    """LoadBalancers in the plan, or speakers from before (`apply` of a file that no longer has them)."""
    allocation = plan.allocation
    return plan.cluster is not None and (bool(allocation and allocation.load_balancers)
                                         or os.path.isdir(paths.lab(plan.lab).lb_dir))


def _l2(plan: Plan) -> bool:
    return any(lb.l2_nodes for lb in plan.allocation.load_balancers.values()) if plan.allocation else False


def apply_load_balancers(b: Build) -> None:
    from labkit.lb import announce

    plan = b.plan
    nodes = k8s_nodes(plan)
    if _l2(plan) or os.path.isdir(paths.lab(plan.lab).lb_dir):  # none left: the speakers answer for nothing
        interfaces = {n.name: [i.name for i in n.interfaces] for n in nodes}
        announce.write_configs(plan.lab, interfaces, b.services)
        announce.start_speakers(plan.lab, {n.name: b.sandboxes[n.name].netns_path for n in nodes})
        announce.wait_announced(plan.lab, [n.name for n in nodes], b.services)
    if plan.cluster is not None and plan.cluster.bgp is not None:
        from labkit.phases.bgp import bgp_announce, ensure_bgp

        ensure_bgp(b, bgp_announce(b))
        wait_bgp_announced(b)


def wait_bgp_announced(b: Build, timeout: float = 30.0) -> None:
    """Until every router node holds each LoadBalancer /32 announced, and none withdrawn since the views
    applied before (`apply`), polled over birdc, bounded."""
    import time

    from labkit import bgp
    from labkit.errors import LabkitError
    from labkit.lb import announce

    wanted: dict[str, set[str]] = {}
    for node, found in announce.bgp_prefixes(b.services).items():
        for prefix, _ in found:
            wanted.setdefault(prefix, set()).add(node)
    gone = {p for found in announce.bgp_prefixes(b.previous_services or []).values() for p, _ in found} - set(wanted)
    routers = [s for s in bgp.speakers(b.plan) if s.role == "router"]
    deadline = time.monotonic() + timeout
    while True:
        lacking = []
        for router in routers:
            found = bgp.live(bgp.files_of(b.plan.lab, router.node).socket)
            learned = {r["prefix"] for r in found.get("routes", []) if r["type"] == "unicast"}
            lacking += [f"{router.node} lacks {p}" for p in wanted if p not in learned]
            lacking += [f"{router.node} still holds {p}" for p in gone if p in learned]
        if not lacking:
            return
        if time.monotonic() > deadline:
            raise LabkitError(f"LoadBalancer routes not announced within {timeout:.0f} s: {'; '.join(lacking)}")
        time.sleep(0.1)
