"""Egress masquerade: pod traffic leaving the cluster takes the node's address; pod-to-pod never does.

One nftables table (`labkit-cni`) per node and address family (`table ip`, and `table ip6` in a
cluster with IPv6 pod CIDRs: each family's traffic leaves by the node's address of that family),
applied as a whole through labkit.net.nft (one `nft -f -` transaction: replacing it is atomic).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Network, IPv6Network, collapse_addresses, ip_network

from labkit.net import nft

MASQ_TEMPLATE = "cni-masquerade.nft.j2"
MASQ_TABLE = "labkit-cni"
NFT_FAMILIES = {4: ("ip", "ipv4_addr"), 6: ("ip6", "ipv6_addr")}  # address family -> nft table family, set type
_TABLE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,31}$")


def _networks(cidrs: str | Sequence[str] | None, what: str) -> list[IPv4Network | IPv6Network]:
    """One CIDR or several (a string, or a list): at most one per family."""
    if cidrs is None:
        return []
    nets = [ip_network(c, strict=False) for c in ([cidrs] if isinstance(cidrs, str) else cidrs)]
    if len({n.version for n in nets}) != len(nets):
        raise ValueError(f"{what}: at most one CIDR per address family, got {', '.join(map(str, nets))}")
    return nets


def render_masquerade(cluster_pod_cidr: str | Sequence[str], *, pod_cidr: str | Sequence[str] | None = None,
                      exclude: Iterable[str] = (), table: str = MASQ_TABLE) -> str:
    """The nft script: per family of `cluster_pod_cidr` (one CIDR or one per family), masquerade from the
    node's `pod_cidr` of that family (default: the whole cluster CIDR) to outside the cluster pod CIDR."""

    if not _TABLE_RE.match(table):
        raise ValueError(f"invalid nftables table name {table!r}")
    clusters = _networks(cluster_pod_cidr, "cluster pod CIDR")
    if not clusters:
        raise ValueError("no cluster pod CIDR to masquerade from")
    nodes = {n.version: n for n in _networks(pod_cidr, "pod CIDR")}
    excluded = [ip_network(c, strict=False) for c in exclude]
    families = []
    for cluster in clusters:
        family, addr_type = NFT_FAMILIES[cluster.version]
        keep = [cluster] + [n for n in excluded if n.version == cluster.version]
        families.append({"family": family, "addr_type": addr_type, "pod_cidr": str(nodes.get(cluster.version, cluster)),
                         "no_masquerade": [str(n) for n in collapse_addresses(keep)]})
    from labkit import templating

    return templating.render(MASQ_TEMPLATE, table=table, families=families)


def apply_masquerade(netns_path: str, cluster_pod_cidr: str | Sequence[str], *,
                     pod_cidr: str | Sequence[str] | None = None, exclude: Iterable[str] = (),
                     table: str = MASQ_TABLE) -> str:
    """Install (or atomically replace) the masquerade tables in a node; return the script."""
    script = render_masquerade(cluster_pod_cidr, pod_cidr=pod_cidr, exclude=exclude, table=table)
    nft.apply_ruleset(netns_path, script)
    return script


def remove_masquerade(netns_path: str, table: str = MASQ_TABLE) -> None:
    """Drop the masquerade tables (every family's) from a node (fine if they are not there)."""
    if not _TABLE_RE.match(table):
        raise ValueError(f"invalid nftables table name {table!r}")
    # as nft.delete_table does, for every family in one transaction (one process)
    nft.apply_ruleset(netns_path, "".join(f"table {family} {table} {{\n}}\ndelete table {family} {table}\n"
                                          for family, _ in NFT_FAMILIES.values()))
