"""What `up` and `apply` have built so far, which every phase reads and fills in."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from labkit.progress import Progress
from labkit.runtime import Runtime, Sandbox
from labkit.topology.plan import Plan

if TYPE_CHECKING:
    from labkit.k8s import Workloads
    from labkit.k8s.standin import StandIn
    from labkit.proxy import ServiceView

N = TypeVar("N")


@dataclass
class PodRecord:
    """A running pod, as status and exec see it."""

    namespace: str
    name: str
    node: str
    ip: str | None
    netns: str
    netns_path: str
    pid: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    pid_start: int | None = None  # the holder's start time: `pid` is trusted only while it matches
    host_network: bool = False  # in its node's network namespace, with the node's IP
    run_once: bool = False  # restartPolicy Never/OnFailure: its containers run to their end (status: phase)
    # Multus's k8s.v1.cni.cncf.io/network-status: the cluster network first (default), then attachments
    network_status: list[dict[str, Any]] = field(default_factory=list)
    # Its containers: {"name", "stand_in": why labkit's stand-in runs instead, or None} (labkit.k8s.standin).
    containers: list[dict[str, Any]] = field(default_factory=list)
    # One address per cluster family, the preferred family first (status.podIPs); `ip` is the first (podIP).
    ips: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.ips and self.ip:
            self.ips = [self.ip]

    def as_status(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "name": self.name, "node": self.node, "ip": self.ip, "ips": self.ips,
                "netns": self.netns, "netns_path": self.netns_path, "pid": self.pid, "labels": self.labels,
                "pid_start": self.pid_start, "host_network": self.host_network, "run_once": self.run_once,
                "network_status": self.network_status, "containers": self.containers}


class Build:
    """What `up` has made so far; the phases fill it in."""

    def __init__(self, plan: Plan, runtime: Runtime, progress: Progress):
        self.plan = plan
        self.runtime = runtime
        self.progress = progress
        self.sandboxes: dict[str, Sandbox] = {}
        self.pods: list[PodRecord] = []
        self.timings: dict[str, float] = {}
        self.services: list[ServiceView] = []
        self.previous_services: list[ServiceView] | None = None  # set by `apply`: the views applied before
        self.stand_ins: dict[str, dict[str, StandIn]] = {}  # pod key -> container -> stand-in, of pods started now


def workloads_of(plan: Plan) -> Workloads | None:
    return plan.workloads


def k8s_nodes(plan: Plan) -> list:
    return list(plan.cluster_nodes)


def on_every_node(work: Callable[[N], object], nodes: Sequence[N]) -> None:
    """work(node) for all nodes at once. A node's share of a phase is a few `nsenter ip|nft` runs
    that mostly wait on fork and exec, so nodes overlap well even on 2 cores. The first error is raised."""
    if len(nodes) < 2:
        for node in nodes:
            work(node)
        return
    with ThreadPoolExecutor(max_workers=min(8, len(nodes)), thread_name_prefix="labkit-node") as pool:
        for _ in pool.map(work, nodes):
            pass
