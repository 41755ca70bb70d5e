"""NetworkPolicy enforcement: networking/v1 policies compiled to one nftables table per node.

    apply_node_policies(node_netns_path, workloads, pod_ips, node_name=..., pod_nodes=..., node_ips=...)
    remove_node_policies(node_netns_path)          # on `down`; idempotent

Egress is enforced on the source pod's node, ingress on the destination pod's node;
`compile_node_policy` is the pure half, `render_node_policies` writes it as nft text.
Both address families are covered by the one `inet` table: a dual-stack pod's addresses
share its chains, and peer sets come per family.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from labkit.k8s.load import Workloads
from labkit.net import nft
from labkit.policy.compile import (
    Allow,
    IsolatedPod,
    NodePolicy,
    PortRange,
    RuleRef,
    compile_node_policy,
    selects,
)
from labkit.policy.ruleset import (
    DEFAULT_TABLE,
    FAMILY,
    delete_table_text,
    plan_policy_table,
    render_node_policies,
)


def apply_node_policies(
    netns_path: str | None,
    workloads: Workloads,
    pod_ips: Mapping[str, str | Sequence[str]],
    *,
    node_name: str,
    pod_nodes: Mapping[str, str],
    node_ips: Sequence[str] = (),
    table: str = DEFAULT_TABLE,
) -> str:
    """Compile the node's policies, replace its table atomically; returns the text applied.

    `pod_ips` and `pod_nodes` map "ns/pod" to the pod's address(es: one per family, the
    preferred first) and node (every pod of the cluster: peers on other nodes are selected
    by address too); `node_ips` are this node's own addresses, of every family it has.
    """
    model = compile_node_policy(workloads, pod_ips, node_name=node_name, pod_nodes=pod_nodes,
                                node_ips=node_ips)
    text = render_node_policies(model, table)
    nft.apply_ruleset(netns_path, text)
    return text


def remove_node_policies(netns_path: str | None, table: str = DEFAULT_TABLE) -> None:
    """Delete the node's policy table; nothing happens if it is not there."""
    nft.apply_ruleset(netns_path, delete_table_text(table))


__all__ = [
    "DEFAULT_TABLE",
    "FAMILY",
    "Allow",
    "IsolatedPod",
    "NodePolicy",
    "PortRange",
    "RuleRef",
    "apply_node_policies",
    "compile_node_policy",
    "plan_policy_table",
    "remove_node_policies",
    "render_node_policies",
    "selects",
]
