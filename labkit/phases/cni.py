"""Phase `pod network` (and `cni server`): each k8s-node's CNI conflist and routes, and the lab's CNI server."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from labkit import paths, processes
from labkit.cni import backends
from labkit.cni.conflist import write_conflist
from labkit.cni.dockerhost import write_docker_conflist
from labkit.cni.errors import CNIError
from labkit.errors import LabkitError
from labkit.files import makedirs
from labkit.net import wiring
from labkit.phases.build import k8s_nodes, on_every_node
from labkit.topology import kinds
from labkit.topology.plan import ClusterPlan, NodePlan

if TYPE_CHECKING:
    from labkit.phases.build import Build

READY_TIMEOUT = 10.0  # seconds for the CNI server to answer


def pod_mtu(cluster: ClusterPlan) -> int | None:
    if cluster.mtu:
        return cluster.mtu
    return backends.pod_mtu(cluster.backend) if cluster.backend == "vxlan" else None


def cluster_node(node: NodePlan, netns_path: str) -> backends.ClusterNode:
    """A k8s-node as the CNI backends see it: its podCIDRs (one per cluster family, the cluster's order)
    and its addresses on the node network."""
    assert node.mgmt_ipv4 is not None and node.pod_cidr is not None
    return backends.ClusterNode(node.name, netns_path, str(node.mgmt_ipv4.ip), str(node.pod_cidr),
                                pod_cidrs=tuple(str(c) for c in node.pod_cidrs),
                                node_ip6=str(node.mgmt_ipv6.ip) if node.mgmt_ipv6 else None)


def setup_pod_network(b: Build) -> None:
    """Per k8s-node: its CNI conflist, routes to every peer's podCIDR, masquerade for egress; each per
    address family of the cluster."""
    plan, cluster = b.plan, b.plan.cluster
    if cluster is None:
        return
    start_cni_server(plan.lab)  # first: it loads while the rest of the cluster is built
    nodes = [cluster_node(n, b.sandboxes[n.name].netns_path) for n in k8s_nodes(plan)]
    files = paths.lab(plan.lab)
    for node in nodes:  # one pod CIDR: `ipam.subnet` as ever; one per family: host-local's `ipam.ranges`
        write_conflist(files.conflist_dir(node.name), paths.CNI_NETWORK, [str(c) for c in node.pod_nets],
                       mtu=pod_mtu(cluster), data_dir=files.ipam_dir(node.name), mode=cluster.mode)

    for host in plan.pod_hosts:
        if host.kind_info.container_host:  # Docker's model: the reference bridge and portmap plugins
            write_docker_conflist(files.conflist_dir(host.name), paths.CNI_NETWORK, bridge=kinds.DOCKER_BRIDGE,
                                  subnet=kinds.DOCKER_SUBNET, data_dir=files.ipam_dir(host.name))

    def wire(node: backends.ClusterNode) -> None:
        # a node's own processes reach ClusterIPs: DNAT in output needs a route first (per family)
        for service_cidr in cluster.service_cidrs:
            wiring.add_device_route(node.netns_path, str(service_cidr), "eth0")
        backends.apply_backend(cluster.backend, node, nodes)
        if cluster.masquerade:  # false: pods reach outside by their own address (Calico's natOutgoing: false)
            backends.apply_masquerade(node.netns_path, [str(c) for c in cluster.pod_cidrs],
                                      pod_cidr=[str(c) for c in node.pod_nets])

    try:
        on_every_node(wire, nodes)
    except backends.BackendError as exc:
        raise LabkitError(str(exc)) from None


def start_cni_server(lab: str) -> None:
    """The lab's CNI server, and the launcher that calls it in the lab's CNI bin dir, for runtimes
    that exec `labkit-cni` (labkit itself calls the plugin in-process). `down` stops it by its pid file."""
    from labkit.cni import server
    from labkit.cni.install import install_launcher

    files = paths.lab(lab)
    makedirs(files.cni_dir)
    processes.write_pid_file(files.cni_server_pid, server.start(files.cni_socket, files.cni_server_log))
    install_launcher(files.cni_bin_dir, socket=files.cni_socket, compile_bytecode=False)


def ensure_cni_server(b: Build) -> None:
    """`apply`: a lab whose CNI server died (killed by hand, a crash) gets a new one."""
    from labkit.cni import server

    files = paths.lab(b.plan.lab)
    if server.is_serving(files.cni_socket):
        return
    processes.stop_recorded(files.cni_dir, marker=files.dir)  # one that lives on must not outlive its pid file
    # a killed server leaves its socket file behind: gone, the wait below sees the new one bind, not the old file
    with contextlib.suppress(FileNotFoundError):
        os.unlink(files.cni_socket)
    start_cni_server(b.plan.lab)
    wait_cni_server(b)


def wait_cni_server(b: Build) -> None:
    """`up` returns with the lab's CNI server listening, so an exec right after never runs in place."""
    from labkit.cni import server

    files = paths.lab(b.plan.lab)
    proc = processes.read_pid_file(files.cni_server_pid)
    if proc is None:
        raise LabkitError(f"the lab's CNI server left no pid in {files.cni_server_pid}")
    try:
        server.wait_serving(files.cni_socket, proc.pid, files.cni_server_log, READY_TIMEOUT)
    except CNIError as e:
        raise LabkitError(f"{e.msg}: {e.details}") from None
