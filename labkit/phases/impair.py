"""Phase `impairments` (the topology's `delay`, `loss`, `rate`, ... on link ends, once links are up), and the
live side of the same: `labkit netem` and what status reports as in force.

The lab's state keeps the names of the nodes and pods that carry an impairment (`impaired`), so status
asks the kernel about those alone; `labkit netem show` asks every node and pod.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from labkit import impair, state
from labkit.errors import LabkitError
from labkit.topology.impairment import Impairment
from labkit.net.netns import netns_path
from labkit.topology.plan import MGMT_IFNAME, Plan

if TYPE_CHECKING:
    from labkit.phases.build import Build

STATE_KEY = "impaired"
MGMT = "mgmt"  # the mgmt network's namespace, where eth0's loss rules sit


def with_impairments(plan: Plan) -> bool:
    return bool(plan.impairments)


def apply_impairments(b: Build) -> None:
    """Every impaired link end of the topology, in link order (a kernel without netem fails here, by name)."""
    touched = set()
    for link in b.plan.links:
        for end, other in ((link.a, link.b), (link.b, link.a)):
            if end.impairment is None:
                continue
            node = b.plan.node(end.node)
            mtu = next((i.mtu for i in node.interfaces if i.name == end.ifname and i.mtu), None) or 1500
            impair.set_impairment(b.sandboxes[end.node].netns_path, end.ifname, end.impairment,
                                  where=f"{end.node}:{end.ifname}",
                                  peer=impair.Peer(b.sandboxes[other.node].netns_path, other.ifname), mtu=mtu)
            touched |= {end.node, other.node}
    _record(b.plan.lab, touched, set())


def peer_of(summary: Mapping[str, Any], target: str, ifname: str) -> tuple[str, impair.Peer] | None:
    """The other end of a node's link (its name and Peer), from the lab's status: a topology link's
    far end, or for eth0 the node's port on the mgmt bridge. None for what labkit did not wire (pods)."""
    node = next((n for n in summary.get("nodes", []) if n["name"] == target), None)
    iface = next((i for i in (node or {}).get("interfaces", []) if i["name"] == ifname), None)
    if node is None or iface is None:
        return None
    if iface.get("peer"):
        other, _, other_if = iface["peer"].partition(":")
        paths = targets_of(summary, {other})
        return (other, impair.Peer(paths[other], other_if)) if other in paths else None
    mgmt = summary.get("mgmt")
    if mgmt and ifname == MGMT_IFNAME:
        return MGMT, impair.Peer(netns_path(mgmt["netns"]), target)
    return None


def set_live(lab: str, summary: Mapping[str, Any], target: str, netns_path: str, ifname: str,
             imp: Impairment) -> list[dict[str, Any]]:
    """`labkit netem`: make `imp` what target:ifname suffers (empty: clear it); returns what is now in
    force on that target, read back from the kernel."""
    peer = peer_of(summary, target, ifname)
    impair.set_impairment(netns_path, ifname, imp, where=f"{target}:{ifname}", peer=peer[1] if peer else None)
    _record(lab, {target, *([peer[0]] if peer else [])}, set())
    return in_force({target: netns_path}, holders_of(summary))


def _record(lab: str, add: set[str], remove: set[str]) -> None:
    recorded = state.read(lab)
    if recorded is None:
        return
    names = (set(recorded.get(STATE_KEY) or []) | add) - remove
    state.write(lab, {**recorded, STATE_KEY: sorted(names)})


def recorded_targets(recorded: Mapping[str, Any] | None) -> set[str]:
    return set((recorded or {}).get(STATE_KEY) or [])


def in_force(targets: Mapping[str, str], holders: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """What the kernel has on each target (name -> netns path): `{node, interface, delay, loss, rate, ...,
    via, dropped}` per impaired interface, in target order. Loss rules sit where packets arrive: in the
    targets' namespaces and `holders'` (the mgmt network's)."""
    return [item.as_dict() for item in impair.read(dict(targets), dict(holders or {}))]


def holders_of(summary: Mapping[str, Any]) -> dict[str, str]:
    mgmt = summary.get("mgmt")
    return {MGMT: netns_path(mgmt["netns"])} if mgmt else {}


def status_of(recorded: Mapping[str, Any] | None, summary: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """What status reports: the impairments in force, asked of the namespaces recorded as holding any;
    None when they cannot be read (an ordinary user cannot enter root's namespaces)."""
    names = recorded_targets(recorded)
    if not names:
        return []
    try:
        return in_force(targets_of(summary), {k: v for k, v in holders_of(summary).items() if k in names})
    except (LabkitError, OSError, ValueError):
        return None


def targets_of(summary: Mapping[str, Any], names: Iterable[str] | None = None) -> dict[str, str]:
    """Node and pod names -> netns paths from a status summary (all of them, or those in `names`)."""
    wanted = set(names) if names is not None else None
    found: dict[str, str] = {}
    for node in summary.get("nodes", []):
        if node.get("netns_path") and (wanted is None or node["name"] in wanted):
            found[node["name"]] = node["netns_path"]
    for pod in summary.get("pods", []):
        key = f"{pod['namespace']}/{pod['name']}"
        if pod.get("netns_path") and (wanted is None or key in wanted):
            found[key] = pod["netns_path"]
    return found
