"""Cross-node pod routing (host-gw, vxlan) and egress masquerade, per node namespace.

In-process helpers for the orchestrator (not on the exec path). Every call
works on one node given as a namespace path and runs `ip -batch -` or
`nft -f -` there through `nsenter --net=<path>`, with argument lists only
(no shell strings); names and addresses are validated first.

- host-gw (kindnet, flannel host-gw): in each node, one route per peer
  podCIDR via the peer's node IP on the mgmt interface (eth0).
- vxlan (flannel's vxlan backend): device `flannel.1` (VNI 1, UDP 8472,
  nolearning, local = node IP, dev eth0, MTU = underlay - 50) holding
  `<podCIDR .0>/32`; per peer a permanent neighbour (peer .0 -> peer VTEP MAC),
  an FDB entry (peer VTEP MAC -> peer node IP) and
  `route <peer podCIDR> via <peer .0> dev flannel.1 onlink`. VTEP MACs are
  derived from the node IP (`0e:6c:<ip bytes>`), so peers need no exchange.
- masquerade: nftables table `labkit-cni` masquerading traffic from the
  node's pods to anything outside the cluster pod CIDR.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

MASQ_TEMPLATE = "cni-masquerade.nft.j2"
MASQ_TABLE = "labkit-cni"
BACKENDS = ("host-gw", "vxlan")
VXLAN_DEV = "flannel.1"
VXLAN_VNI = 1
VXLAN_PORT = 8472
VXLAN_OVERHEAD = 50
_IFNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,14}$")
_TABLE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,31}$")


class BackendError(RuntimeError):
    """A node-network command failed; the message says which node and what."""


@dataclass(frozen=True)
class ClusterNode:
    """One cluster node as the CNI backends see it."""

    name: str
    netns_path: str  # e.g. /run/netns/<lab>-<node>
    node_ip: str  # the node's address on the mgmt network (eth0)
    pod_cidr: str  # the node's podCIDR, e.g. 10.244.1.0/24
    vtep_mac: str | None = None  # vxlan: default derived from node_ip

    @property
    def pod_net(self) -> IPv4Network:
        return IPv4Network(self.pod_cidr, strict=False)

    @property
    def vtep_ip(self) -> str:
        """The podCIDR's .0, held as /32 on flannel.1."""
        return str(self.pod_net.network_address)

    @property
    def mac(self) -> str:
        return self.vtep_mac or vtep_mac_for(self.node_ip)


def vtep_mac_for(node_ip: str) -> str:
    """A stable, locally administered unicast MAC for a node's VTEP."""
    b = IPv4Address(node_ip).packed
    return "0e:6c:" + ":".join(f"{x:02x}" for x in b)


def pod_mtu(backend: str, underlay_mtu: int = 1500) -> int:
    """The MTU pods should get (the conflist's `mtu`): underlay - 50 under vxlan."""
    _check_backend(backend)
    return underlay_mtu - VXLAN_OVERHEAD if backend == "vxlan" else underlay_mtu


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown CNI backend {backend!r}; valid: {', '.join(BACKENDS)}")


def _validate(node: ClusterNode) -> None:
    if not str(node.netns_path).startswith("/"):
        raise ValueError(f"node {node.name}: netns_path must be an absolute path")
    IPv4Address(node.node_ip)
    IPv4Network(node.pod_cidr, strict=False)
    if node.vtep_mac is not None and not re.fullmatch(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}",
                                                      node.vtep_mac):
        raise ValueError(f"node {node.name}: invalid vtep_mac {node.vtep_mac!r}")


def _run(netns_path: str, argv: Sequence[str], *, stdin: str | None = None,
         what: str = "") -> str:
    cmd = ["nsenter", f"--net={netns_path}", "--", *argv]
    p = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise BackendError(f"{what or ' '.join(argv)} in {netns_path} failed: "
                           f"{(p.stderr or p.stdout).strip()}")
    return p.stdout


def _ip_batch(netns_path: str, lines: Iterable[str], what: str) -> None:
    text = "".join(f"{line}\n" for line in lines)
    if text:
        _run(netns_path, ["ip", "-batch", "-"], stdin=text, what=what)


def _link(netns_path: str, name: str) -> dict | None:
    cmd = ["nsenter", f"--net={netns_path}", "--", "ip", "-j", "-d", "link", "show", "dev", name]
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        return None
    data = json.loads(p.stdout or "[]")
    return data[0] if data else None


def underlay_mtu(netns_path: str, dev: str = "eth0") -> int:
    link = _link(netns_path, dev)
    if link is None:
        raise BackendError(f"no interface {dev} in {netns_path}")
    return int(link.get("mtu", 1500))


# ---------------------------------------------------------------------------
# routing backends


def apply_backend(backend: str, local: ClusterNode, peers: Sequence[ClusterNode], *,
                  mtu: int | None = None, dev: str = "eth0") -> None:
    """Make `local` route to every peer's podCIDR with `backend`. Idempotent.

    `mtu` is the flannel.1 MTU for vxlan (default: `dev`'s MTU - 50).
    """
    _check_backend(backend)
    if not _IFNAME_RE.match(dev):
        raise ValueError(f"invalid interface name {dev!r}")
    for n in (local, *peers):
        _validate(n)
    others = [p for p in peers if p.name != local.name]
    if backend == "host-gw":
        _ip_batch(local.netns_path, [
            f"route replace {p.pod_net} via {p.node_ip} dev {dev} proto static" for p in others
        ], f"host-gw routes on {local.name}")
        return
    _apply_vxlan(local, others, mtu=mtu, dev=dev)


def _apply_vxlan(local: ClusterNode, peers: Sequence[ClusterNode], *, mtu: int | None,
                 dev: str) -> None:
    ns = local.netns_path
    if mtu is None:
        mtu = underlay_mtu(ns, dev) - VXLAN_OVERHEAD
    link = _link(ns, VXLAN_DEV)
    lines = []
    if link is not None:
        info = (link.get("linkinfo") or {}).get("info_data") or {}
        same = (link.get("linkinfo", {}).get("info_kind") == "vxlan"
                and info.get("id") == VXLAN_VNI and info.get("port") == VXLAN_PORT
                and info.get("local") == local.node_ip
                and link.get("address") == local.mac.lower())
        if not same:
            lines.append(f"link del {VXLAN_DEV}")
            link = None
    if link is None:
        lines.append(f"link add {VXLAN_DEV} address {local.mac} type vxlan id {VXLAN_VNI} "
                     f"local {local.node_ip} dev {dev} dstport {VXLAN_PORT} nolearning")
    lines.append(f"link set {VXLAN_DEV} mtu {int(mtu)} up")
    lines.append(f"addr replace {local.vtep_ip}/32 dev {VXLAN_DEV}")
    fdb = []
    for p in peers:
        lines += [
            f"neigh replace {p.vtep_ip} lladdr {p.mac} dev {VXLAN_DEV} nud permanent",
            f"route replace {p.pod_net} via {p.vtep_ip} dev {VXLAN_DEV} onlink",
        ]
        fdb.append(f"fdb replace {p.mac} dev {VXLAN_DEV} dst {p.node_ip} self permanent")
    _ip_batch(ns, lines, f"vxlan on {local.name}")
    if fdb:  # FDB entries are `bridge` commands, not `ip` ones
        text = "".join(f"{line}\n" for line in fdb)
        _run(ns, ["bridge", "-batch", "-"], stdin=text, what=f"vxlan FDB on {local.name}")


def remove_backend(backend: str, local: ClusterNode, peers: Sequence[ClusterNode], *,
                   dev: str = "eth0") -> None:
    """Undo apply_backend on `local` (missing pieces are fine)."""
    _check_backend(backend)
    for n in (local, *peers):
        _validate(n)
    if backend == "vxlan":
        if _link(local.netns_path, VXLAN_DEV) is not None:
            _ip_batch(local.netns_path, [f"link del {VXLAN_DEV}"], f"vxlan on {local.name}")
        return
    for p in peers:
        if p.name == local.name:
            continue
        cmd = ["nsenter", f"--net={local.netns_path}", "--", "ip", "route", "del",
               str(p.pod_net), "via", p.node_ip, "dev", dev]
        subprocess.run(cmd, capture_output=True, check=False)


def apply_cluster(backend: str, nodes: Sequence[ClusterNode], *, mtu: int | None = None,
                  dev: str = "eth0") -> None:
    """apply_backend on every node with all the others as peers."""
    for n in nodes:
        apply_backend(backend, n, nodes, mtu=mtu, dev=dev)


# ---------------------------------------------------------------------------
# masquerade


def render_masquerade(cluster_pod_cidr: str, *, pod_cidr: str | None = None,
                      exclude: Iterable[str] = (), table: str = MASQ_TABLE) -> str:
    """The nft script: masquerade from `pod_cidr` to outside the cluster pod CIDR."""

    if not _TABLE_RE.match(table):
        raise ValueError(f"invalid nftables table name {table!r}")
    cluster = IPv4Network(cluster_pod_cidr, strict=False)
    src = IPv4Network(pod_cidr, strict=False) if pod_cidr else cluster
    keep = [cluster] + [IPv4Network(c, strict=False) for c in exclude]
    from labkit import templating

    return templating.render(
        MASQ_TEMPLATE,
        table=table, pod_cidr=str(src), no_masquerade=[str(n) for n in _collapse(keep)])


def _collapse(nets: list[IPv4Network]) -> list[IPv4Network]:
    from ipaddress import collapse_addresses

    return list(collapse_addresses(nets))


def apply_masquerade(netns_path: str, cluster_pod_cidr: str, *, pod_cidr: str | None = None,
                     exclude: Iterable[str] = (), table: str = MASQ_TABLE) -> str:
    """Install (or atomically replace) the masquerade table in a node; return the script."""
    script = render_masquerade(cluster_pod_cidr, pod_cidr=pod_cidr, exclude=exclude, table=table)
    _run(netns_path, ["nft", "-f", "-"], stdin=script, what=f"nft table {table}")
    return script


def remove_masquerade(netns_path: str, table: str = MASQ_TABLE) -> None:
    """Drop the masquerade table from a node (fine if it is not there)."""
    if not _TABLE_RE.match(table):
        raise ValueError(f"invalid nftables table name {table!r}")
    script = f"table ip {table}\ndelete table ip {table}\n"
    _run(netns_path, ["nft", "-f", "-"], stdin=script, what=f"nft delete table {table}")
