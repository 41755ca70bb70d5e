"""Egress masquerade: pod traffic leaving the cluster takes the node's address; pod-to-pod never does.

One nftables table (`labkit-cni`) per node, applied as a whole through labkit.net.nft (one `nft -f -`
transaction: replacing it is atomic).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from ipaddress import IPv4Network, collapse_addresses

from labkit.net import nft

MASQ_TEMPLATE = "cni-masquerade.nft.j2"
MASQ_TABLE = "labkit-cni"
_TABLE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,31}$")


def render_masquerade(cluster_pod_cidr: str, *, pod_cidr: str | None = None,
                      exclude: Iterable[str] = (), table: str = MASQ_TABLE) -> str:
    """The nft script: masquerade from `pod_cidr` to outside the cluster pod CIDR."""

    if not _TABLE_RE.match(table):
        raise ValueError(f"invalid nftables table name {table!r}")
    cluster = IPv4Network(cluster_pod_cidr, strict=False)
    src = IPv4Network(pod_cidr, strict=False) if pod_cidr else cluster
    keep = [cluster] + [IPv4Network(c, strict=False) for c in exclude]
    from labkit import templating

    return templating.render(MASQ_TEMPLATE, table=table, pod_cidr=str(src),
                             no_masquerade=[str(n) for n in collapse_addresses(keep)])


def apply_masquerade(netns_path: str, cluster_pod_cidr: str, *, pod_cidr: str | None = None,
                     exclude: Iterable[str] = (), table: str = MASQ_TABLE) -> str:
    """Install (or atomically replace) the masquerade table in a node; return the script."""
    script = render_masquerade(cluster_pod_cidr, pod_cidr=pod_cidr, exclude=exclude, table=table)
    nft.apply_ruleset(netns_path, script)
    return script


def remove_masquerade(netns_path: str, table: str = MASQ_TABLE) -> None:
    """Drop the masquerade table from a node (fine if it is not there)."""
    if not _TABLE_RE.match(table):
        raise ValueError(f"invalid nftables table name {table!r}")
    nft.delete_table(netns_path, table)
