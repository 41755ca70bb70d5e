"""Cross-node pod routing backends, as a registry, and egress masquerade.

In-process helpers for the orchestrator (not on the exec path). A backend is a
class satisfying `base.Backend` (name, pod MTU, apply/remove on one node);
`REGISTRY` maps each name to its class. Adding a backend is one module beside
these and one `REGISTRY.register` line below; the topology schema's list of
backend names (labkit.topology.schema.CNI.backend) must name exactly the
registered ones, which tests/unit/test_cni_backends_registry.py checks.

- host-gw (hostgw.py): a route per peer podCIDR via the peer's node IP (per family: IPv6
  podCIDRs via the peer's IPv6 node address).
- vxlan (vxlan.py): flannel's vxlan device, neighbours, FDB entries, onlink routes (IPv6 inside
  the same device, over the IPv4 underlay).
- bgp (bgp.py): nothing of its own: each node's BIRD (labkit.bgp) installs the peers' routes.
- masquerade (masquerade.py): nftables table `labkit-cni` (`ip`, and `ip6` for IPv6 pod CIDRs)
  masquerading traffic from the node's pods to anything outside the cluster pod CIDR of its family.

A node (`ClusterNode`) has one podCIDR per cluster address family (`pod_cidrs`, the preferred
family's first) and its node-network addresses (`node_ip`, IPv4: every backend's underlay;
`node_ip6`: host-gw's IPv6 next hop).
"""

from __future__ import annotations

from collections.abc import Sequence

from labkit.errors import LabkitError

from .bgp import Bgp
from .base import Backend, BackendError, ClusterNode, check_ifname, on_node, underlay_mtu, vtep_mac_for
from .hostgw import HostGw
from .masquerade import MASQ_TABLE, apply_masquerade, remove_masquerade, render_masquerade
from .vxlan import VXLAN_DEV, VXLAN_OVERHEAD, VXLAN_PORT, VXLAN_VNI, Vxlan

__all__ = [
    "MASQ_TABLE", "REGISTRY", "VXLAN_DEV", "VXLAN_OVERHEAD", "VXLAN_PORT", "VXLAN_VNI", "Backend", "BackendError",
    "BackendRegister", "ClusterNode", "UnknownBackend", "apply_backend", "apply_cluster", "apply_masquerade",
    "get_backend", "pod_mtu", "remove_backend", "remove_masquerade", "render_masquerade", "underlay_mtu",
    "vtep_mac_for",
]


class UnknownBackend(LabkitError, ValueError):
    """A backend name nobody registered; the message lists the valid ones."""


class BackendRegister:
    """Backend name -> class (nornir's PluginRegister, in small): register once, look up by name."""

    def __init__(self) -> None:
        self._members: dict[str, type[Backend]] = {}

    def register(self, cls: type[Backend]) -> type[Backend]:
        if cls.name in self._members:
            raise ValueError(f"CNI backend {cls.name!r} is already registered ({self._members[cls.name].__name__})")
        self._members[cls.name] = cls
        return cls

    def names(self) -> tuple[str, ...]:
        return tuple(self._members)

    def get(self, name: str) -> Backend:
        try:
            return self._members[name]()
        except KeyError:
            raise UnknownBackend(f"unknown CNI backend {name!r}; valid: {', '.join(self._members)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._members


REGISTRY = BackendRegister()
REGISTRY.register(HostGw)
REGISTRY.register(Vxlan)
REGISTRY.register(Bgp)


def get_backend(name: str) -> Backend:
    return REGISTRY.get(name)


def pod_mtu(backend: str, underlay_mtu: int = 1500) -> int:
    """The MTU pods should get (the conflist's `mtu`): the underlay's less the backend's encapsulation."""
    return REGISTRY.get(backend).pod_mtu(underlay_mtu)


def apply_backend(backend: str, local: ClusterNode, peers: Sequence[ClusterNode], *,
                  mtu: int | None = None, dev: str = "eth0") -> None:
    """Make `local` route to every peer's podCIDR with `backend` (`peers` may include `local`). Idempotent.

    `mtu` is the backend device's MTU, for those that have one (default: `dev`'s MTU less the overhead).
    """
    impl = REGISTRY.get(backend)
    check_ifname(dev)
    for n in (local, *peers):
        n.validate()
    others = [p for p in peers if p.name != local.name]
    on_node(local, f"{backend} routes",
            lambda sock: impl.apply(sock, local, others, dev=dev, mtu=mtu))


def remove_backend(backend: str, local: ClusterNode, peers: Sequence[ClusterNode], *,
                   dev: str = "eth0") -> None:
    """Undo apply_backend on `local` (missing pieces are fine)."""
    impl = REGISTRY.get(backend)
    check_ifname(dev)
    for n in (local, *peers):
        n.validate()
    others = [p for p in peers if p.name != local.name]
    on_node(local, f"removing {backend} routes", lambda sock: impl.remove(sock, local, others, dev=dev))


def apply_cluster(backend: str, nodes: Sequence[ClusterNode], *, mtu: int | None = None,
                  dev: str = "eth0") -> None:
    """apply_backend on every node with all the others as peers."""
    for n in nodes:
        apply_backend(backend, n, nodes, mtu=mtu, dev=dev)
