"""The service data plane: kube-proxy's nftables design, one table per node and address family.

    views = build_service_view(workloads, pod_ips, allocation=plan.allocation)
    apply_node_services(node_netns_path, views, pod_cidr=...)   # on every node, again on change
    remove_node_services(node_netns_path)                       # on `down`
"""

from __future__ import annotations

from collections.abc import Sequence

from labkit.net import nft
from labkit.proxy.views import (
    Endpoint,
    EndpointAddress,
    ServicePortView,
    ServiceView,
    build_service_view,
)
from labkit.proxy.conntrack import clear_udp_flows, stale_udp_endpoints
from labkit.proxy.ruleset import (
    DEFAULT_TABLE,
    delete_table_text,
    plan_node_ruleset,
    plan_node_rulesets,
    render_node_ruleset,
)


def apply_node_services(
    netns_path: str | None,
    services: Sequence[ServiceView],
    *,
    pod_cidr: str | Sequence[str],
    node_ips: Sequence[str] = (),
    table: str = DEFAULT_TABLE,
    previous: Sequence[ServiceView] | None = None,
    node_name: str | None = None,
) -> str:
    """Render the node's rule set and replace its table atomically; returns the text applied.

    On a change, pass the views applied before as `previous`: UDP flows still
    pinned to endpoints that are gone are then cleared from conntrack.
    """
    text = render_node_ruleset(services, pod_cidr=pod_cidr, node_ips=node_ips, table=table, node_name=node_name)
    nft.apply_ruleset(netns_path, text)
    if previous is not None:
        clear_udp_flows(netns_path, stale_udp_endpoints(previous, services))
    return text


def remove_node_services(netns_path: str | None, table: str = DEFAULT_TABLE) -> None:
    """Delete the node's service tables (IPv4 and IPv6) in one transaction; idempotent."""
    nft.apply_ruleset(netns_path, delete_table_text(table, families=(4, 6)))


__all__ = [
    "DEFAULT_TABLE",
    "Endpoint",
    "EndpointAddress",
    "ServicePortView",
    "ServiceView",
    "apply_node_services",
    "build_service_view",
    "clear_udp_flows",
    "plan_node_ruleset",
    "plan_node_rulesets",
    "remove_node_services",
    "render_node_ruleset",
    "stale_udp_endpoints",
]
