"""containerlab files as they are: which of containerlab's keys each runtime acts on, and the notes
`validate` and `up` print about the ones a runtime leaves without effect.

`EFFECTS` is the one table of it (the README's containerlab table says the same): a node key
-> what the netns runtime does with it, what the docker runtime does with it (None: nothing).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from labkit.topology import kinds
from labkit.topology.schema import CLAB_LINK_TYPES, LINK_TYPES

_SAME = "same as netns"
# node key (as written) -> (netns runtime, docker runtime); None: accepted, no effect there
EFFECTS: dict[str, tuple[str | None, str | None]] = {
    "kind": ("linux, bridge, k8s-node", _SAME),
    "group": ("settings inherited from `groups:`; also from `defaults.group`", _SAME),
    "exec": ("run in the node once it is wired", _SAME),
    "sysctls": ("set in the node's network namespace", _SAME),
    "routes": ("labkit's own: static routes", _SAME),
    "mgmt-ipv4": ("the node's eth0 address on the mgmt network", _SAME),
    "mgmt-ipv6": ("the node's eth0 IPv6 address on the mgmt network (mgmt.ipv6-subnet)", _SAME),
    "image": (None, "the node container's image"),
    "binds": (None, "bind mounts; a relative host path is relative to the topology file"),
    "env": (None, "the container's environment"),
    "env-files": (None, "read into the container's environment (relative to the topology file)"),
    "labels": (None, "container labels (beside labkit's own)"),
    "cmd": (None, "the container's command (split like a shell)"),
    "entrypoint": (None, "the container's entrypoint (split like a shell)"),
    "user": (None, "the user the container runs as"),
    "hostname": (None, "the container's hostname (default: the node's name)"),
    "healthcheck": (None, "the container's healthcheck; `up` waits until it reports healthy"),
    "stages": (None, "`wait-for`: a node is created after the nodes (and stages) it waits for"),
    "wait-for": (None, "a node is created after the nodes it names"),
    "memory": (None, "memory limit"),
    "cpu": (None, "CPU limit (cpus)"),
    "cpu-set": (None, "CPUs the container may use"),
    "ports": ("TCP host:node ports forwarded by the lab's forwarder into the node (its mgmt address, "
              "else 127.0.0.1)", _SAME),
}
# every other key of containerlab's node schema: accepted, no effect on either runtime
NO_EFFECT = (
    "startup-delay", "volumes", "image-pull-policy", "restart-policy", "license", "type", "startup-config",
    "enforce-startup-config", "suppress-startup-config", "auto-remove", "credentials", "runtime", "network-mode",
    "link-apply-mode", "extras", "config", "dns", "certificate", "components", "aliases", "shm-size", "cap-add",
    "privileged", "cgroupns-mode", "cgroup-parent", "pid-mode", "tmpfs", "security-opts", "devices", "sandbox",
    "kernel", "publish",
)
# mgmt and top-level keys with no effect (labkit's mgmt network is a bridge in the lab's own namespace)
MGMT_NO_EFFECT = ("network", "bridge", "mtu", "external-access", "skip-when-unused", "driver-opts")
TOP_NO_EFFECT = ("prefix", "settings", "debug")


def no_effect(key: str, runtime: str) -> bool:
    """Whether node key `key` is accepted but left without effect by `runtime`."""
    if key in NO_EFFECT:
        return True
    effect = EFFECTS.get(key)
    if effect is None:
        return False
    return (effect[0] if runtime == "netns" else effect[1]) is None


def notes(runtime: str, node_keys: dict[str, list[str]], other_keys: Iterable[str]) -> list[str]:
    """The one note about keys the runtime leaves without effect: `node_keys` is key -> the nodes
    that set it (after inheritance), `other_keys` the mgmt/link/top-level keys given."""
    idle = {k: nodes for k, nodes in node_keys.items() if no_effect(k, runtime)}
    parts = []
    for key in sorted(idle):
        nodes = idle[key]
        shown = ", ".join(nodes[:3]) + (f" and {len(nodes) - 3} more" if len(nodes) > 3 else "")
        parts.append(f"{key} ({shown})")
    parts += sorted(set(other_keys))
    if not parts:
        return []
    return [f"the {runtime} runtime leaves these keys without effect: {'; '.join(parts)}"]


def unsupported_kind(kind: object, nodes: list[str]) -> str:
    """The one message about a kind labkit does not run, naming the nodes of that kind."""
    shown = ", ".join(nodes[:5]) + (f" and {len(nodes) - 5} more" if len(nodes) > 5 else "")
    whose = f" (node{'s' if len(nodes) > 1 else ''} {shown})" if nodes else ""
    close = difflib.get_close_matches(str(kind), kinds.names(), n=1, cutoff=0.75)
    meant = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown kind {kind!r}{whose}{meant}; labkit runs: {', '.join(kinds.names())}"


def unsupported_link_type(ltype: object) -> str:
    what = "is not one labkit builds" if ltype in CLAB_LINK_TYPES else "is unknown"
    return f"link type {ltype!r} {what}; labkit builds: {', '.join(LINK_TYPES)}"


def raw_kind_problems(data: Any) -> list[tuple[tuple, str]]:
    """Unknown kinds and link types found in the raw document (paths and messages), for a file the
    schema refused, so they are named in the same run as every other problem. One message per kind."""
    topo = data.get("topology") if isinstance(data, dict) else None
    if not isinstance(topo, dict):
        return []
    nodes = topo.get("nodes") if isinstance(topo.get("nodes"), dict) else {}
    groups = topo.get("groups") if isinstance(topo.get("groups"), dict) else {}
    defaults = topo.get("defaults") if isinstance(topo.get("defaults"), dict) else {}

    def kind_field(m: Any) -> Any:
        return m.get("kind") if isinstance(m, dict) else None

    found: dict[Any, tuple[tuple, list[str]]] = {}
    for name, node in nodes.items():
        node = node if isinstance(node, dict) else {}
        group = node.get("group") or defaults.get("group")
        gkind = kind_field(groups.get(group)) if isinstance(group, str) else None
        if kind_field(node) is not None:
            kind, path = node["kind"], ("topology", "nodes", name, "kind")
        elif gkind is not None:
            kind, path = gkind, ("topology", "groups", group, "kind")
        elif kind_field(defaults) is not None:
            kind, path = defaults["kind"], ("topology", "defaults", "kind")
        else:
            continue
        if not isinstance(kind, str) or kind in kinds.REGISTRY:
            continue
        found.setdefault(kind, (path, []))[1].append(str(name))
    problems = [(path, unsupported_kind(kind, names)) for kind, (path, names) in found.items()]
    links = topo.get("links") if isinstance(topo.get("links"), list) else []
    for li, link in enumerate(links):
        ltype = link.get("type") if isinstance(link, dict) else None
        if isinstance(ltype, str) and ltype not in LINK_TYPES:
            problems.append((("topology", "links", li, "type"), unsupported_link_type(ltype)))
    return problems
