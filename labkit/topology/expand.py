"""Inheritance: every node setting comes from node -> group -> kind -> defaults."""

from __future__ import annotations

from typing import Any

from labkit.topology.schema import Node, NodeSettings, TopologyBody

# Mapping settings merge key by key; every other setting is taken whole from the most specific level.
_MERGED = ("sysctls", "env", "labels", "hosts")


def group_of(body: TopologyBody, node: Node) -> str | None:
    """The node's group: its own, else the one `defaults:` gives every node (containerlab's `defaults.group`)."""
    return node.group or body.defaults.group


def effective_settings(body: TopologyBody, node: Node) -> dict[str, Any]:
    """The node's settings after inheritance, as a plain dict (unset keys absent)."""
    group = group_of(body, node)
    kind = node.kind or (body.groups.get(group or "") or NodeSettings()).kind or body.defaults.kind
    levels: list[NodeSettings] = [body.defaults]
    if kind and kind in body.kinds:
        levels.append(body.kinds[kind])
    if group and group in body.groups:
        levels.append(body.groups[group])
    levels.append(node)

    merged: dict[str, Any] = {}
    for level in levels:
        for key, value in level.model_dump(exclude_none=True, exclude={"group", "mgmt_ipv4", "mgmt_ipv6"}).items():
            if key in _MERGED:
                merged[key] = {**merged.get(key, {}), **value}
            else:
                merged[key] = value
    if kind:
        merged["kind"] = kind
    return merged
