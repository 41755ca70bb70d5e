"""Phases `bgp` and `bgp routes` (backend bgp): a BIRD per speaker, and `up` returning once routes converged.

`up` starts every speaker's daemon right after the pod network (the sessions come up while pods
start), and before `readiness` waits until every k8s-node holds a BGP route to every other node's
podCIDR (of each family, in a dual-stack cluster) and every router node to all of them. `apply`
writes the configs again, has running daemons re-read them and starts the ones that died.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from labkit import bgp
from labkit.errors import LabkitError
from labkit.phases.build import on_every_node
from labkit.topology.plan import Plan

if TYPE_CHECKING:
    from labkit.phases.build import Build

CONVERGE_TIMEOUT = 30.0  # seconds for every session to come up and every route to arrive


def with_bgp(plan: Plan) -> bool:
    return plan.cluster is not None and plan.cluster.bgp is not None


def start_bgp(b: Build) -> None:
    """Every speaker's config, then its daemon inside its node's namespace."""
    lab = b.plan.lab

    def start(speaker: bgp.Speaker) -> None:
        files = bgp.write_config(lab, speaker)
        bgp.start(files, b.sandboxes[speaker.node].netns_path)

    on_every_node(start, bgp.speakers(b.plan))


def ensure_bgp(b: Build, announce: dict | None = None) -> None:
    """`apply`: configs written again; running daemons re-read theirs, dead ones start again.
    `announce`: node -> further prefixes (LoadBalancer /32s, labkit.phases.lb); by default those of
    the service views applied last."""
    lab = b.plan.lab
    if announce is None:
        announce = bgp_announce(b)

    def ensure(speaker: bgp.Speaker) -> None:
        files = bgp.write_config(lab, speaker)
        if bgp.running(files) is not None:
            try:
                bgp.reconfigure(files)
            except bgp.BirdcError as e:
                raise LabkitError(f"node {speaker.node}: the BGP daemon did not take its new config: {e}") from None
        else:
            bgp.start(files, b.sandboxes[speaker.node].netns_path)

    on_every_node(ensure, bgp.speakers(b.plan, announce))
    wait_bgp(b)


def missing_routes(lab: str, speakers: list[bgp.Speaker]) -> dict[str, list[str]]:
    """Per speaker, the podCIDRs it originates not yet learned over BGP (k8s-nodes: the others'; routers: all)."""
    pod_cidrs = {s.node: [p.prefix for p in s.install] for s in speakers if s.role == "node"}
    missing = {}
    for speaker in speakers:
        found = bgp.live(bgp.files_of(lab, speaker.node).socket)
        learned = {r["prefix"] for r in found.get("routes", []) if r["primary"]
                   and r["protocol"] not in ("own", "own6") and r["type"] == "unicast"}
        wanted = [c for node, cidrs in pod_cidrs.items() if node != speaker.node for c in cidrs]
        lacking = [c for c in wanted if c not in learned]
        if lacking or "error" in found:
            missing[speaker.node] = lacking + ([found["error"]] if "error" in found else [])
    return missing


def wait_bgp(b: Build, timeout: float = CONVERGE_TIMEOUT) -> None:
    """Until every speaker holds the pod routes it should learn (polled over birdc); then `up` goes on."""
    speakers = bgp.speakers(b.plan)
    deadline = time.monotonic() + timeout
    while True:
        missing = missing_routes(b.plan.lab, speakers)
        if not missing:
            return
        if time.monotonic() > deadline:
            detail = "; ".join(f"{node} lacks {', '.join(m)}" for node, m in missing.items())
            raise LabkitError(f"BGP did not converge within {timeout:.0f} s: {detail} "
                              f"(see birdc -s {bgp.files_of(b.plan.lab, next(iter(missing))).socket} show protocols)")
        time.sleep(0.1)


def bgp_announce(b: Build) -> dict:
    """node -> the LoadBalancer /32s its BGP daemon announces (from the views applied last, on `apply`'s
    early BGP pass, so a running lab's announcements stay while its pods are brought in line)."""
    from labkit.bgp import Prefix
    from labkit.lb import announce

    views = b.services or b.previous_services or []
    return {node: [Prefix(p, why) for p, why in found] for node, found in announce.bgp_prefixes(views).items()}
