"""Node kinds: what each `kind:` of a topology node is, as a small typed registry.

    kinds.get("k8s-node").cluster_node    # True: podCIDR, CNI, service rules, pods
    kinds.names()                         # ("linux", "bridge", "k8s-node", "docker-host"): every list of valid kinds

Every question the code asks about a node's kind is a field of its `NodeKind`
(`node.kind_info.l2_bridge`), never a comparison with a kind's name. Adding a
kind is a `NodeKind` (its own module when it grows behaviour) and a line in `REGISTRY`.

The CNI backend names the schema accepts live here too (`CNI_BACKENDS`): the plan
layer validates them; `labkit.cni`'s backend registry implements exactly these.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True)
class NodeKind:
    """One kind of node and what it means for the plan and the builder."""

    name: str
    description: str
    cluster_node: bool = False  # a Kubernetes node: gets a podCIDR, the CNI, service rules and pods
    l2_bridge: bool = False  # joins its links at layer 2: its ports carry no address, it has no mgmt interface
    # runs the pods that name it in spec.nodeName, Docker's way (a bridge of its own, NAT, published
    # hostPorts), outside the cluster's flat pod network: no podCIDR, Services or policies
    container_host: bool = False
    sysctls: Mapping[str, str] = field(default_factory=dict)  # defaults; the topology's own override them

    @property
    def runs_pods(self) -> bool:
        """Whether pods may be placed on it (a cluster node, or a container host by spec.nodeName)."""
        return self.cluster_node or self.container_host

    @property
    def has_mgmt_interface(self) -> bool:
        return not self.l2_bridge

    @property
    def addressable(self) -> bool:
        """Whether its link ends may carry an IP address."""
        return not self.l2_bridge


LINUX = NodeKind("linux", "a host or router: its links, addresses, routes and exec commands")
BRIDGE = NodeKind("bridge", "an L2 switch joining its links", l2_bridge=True)
K8S_NODE = NodeKind("k8s-node", "a cluster node: podCIDR, CNI, service rules, pods", cluster_node=True,
                    sysctls=MappingProxyType({"net.ipv4.ip_forward": "1"}))


class UnknownKind(KeyError):
    """A kind name the registry does not hold; its message lists the valid ones."""

    def __init__(self, name: object, valid: Iterable[str]):
        self.name = name
        self.message = f"unknown kind {name!r}; valid: {', '.join(valid)}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class Registry:
    """Node kinds by name, in the order they were registered (the order error messages list them)."""

    def __init__(self, members: Iterable[NodeKind] = ()):
        self._members: dict[str, NodeKind] = {}
        for member in members:
            self.register(member)

    def register(self, kind: NodeKind) -> NodeKind:
        if kind.name in self._members:
            raise ValueError(f"node kind {kind.name!r} is registered twice")
        self._members[kind.name] = kind
        return kind

    def get(self, name: str) -> NodeKind:
        try:
            return self._members[name]
        except (KeyError, TypeError):
            raise UnknownKind(name, self.names()) from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._members)

    def __contains__(self, name: object) -> bool:
        return name in self._members

    def __iter__(self) -> Iterator[NodeKind]:
        return iter(self._members.values())


DOCKER_HOST = NodeKind("docker-host", "a Docker host: the pods naming it in spec.nodeName sit behind its own "
                       "bridge docker0 with NAT; only published ports (hostPort) reach them from outside",
                       container_host=True, sysctls=MappingProxyType({"net.ipv4.ip_forward": "1"}))
# What Docker gives every host alike: so two hosts' containers have overlapping addresses
DOCKER_BRIDGE = "docker0"
DOCKER_SUBNET = "172.17.0.0/16"

REGISTRY = Registry([LINUX, BRIDGE, K8S_NODE, DOCKER_HOST])

get = REGISTRY.get
names = REGISTRY.names

# CNI backends the plan accepts (`cluster.cni.backend`); labkit.cni's registry implements exactly these.
CNI_BACKENDS: tuple[str, ...] = ("host-gw", "vxlan", "bgp")
DEFAULT_CNI_BACKEND = "host-gw"
# How pods attach to their node (`cluster.cni.mode`): routed ptp veths, or one bridge per node (kubenet).
CNI_MODES: tuple[str, ...] = ("ptp", "bridge")
DEFAULT_CNI_MODE = "ptp"
