"""The cluster phases of `up`: node pod networks (CNI), pods, and what they need.

Each function takes the `Build` of labkit.lab and does one phase; side effects
go through the components (labkit.cni, the runtime), never hand-rolled here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from labkit import state
from labkit.cni import backends
from labkit.cni.conflist import execute_conflist, write_conflist
from labkit.cni.errors import CNIError
from labkit.errors import LabkitError
from labkit.files import write_atomic
from labkit.net import netns, wiring
from labkit.runtime import ContainerSpec, PodSpec, Sandbox
from labkit.topology.plan import ClusterPlan, Plan, netns_prefix

if TYPE_CHECKING:
    from labkit.k8s import Pod, Workloads
    from labkit.lab import Build

N = TypeVar("N")

CNI_NETWORK = "labkit"
POD_IFNAME = "eth0"
DNS_APP = "kube-dns"
DNS_DEPLOYMENT = "labkit-dns"


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

    def as_status(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "name": self.name, "node": self.node, "ip": self.ip,
                "netns": self.netns, "netns_path": self.netns_path, "pid": self.pid, "labels": self.labels}


def workloads_of(plan: Plan) -> Workloads | None:
    return plan.workloads[0] if plan.workloads else None


def k8s_nodes(plan: Plan) -> list:
    return [n for n in plan.nodes if n.kind == "k8s-node"]


def conflist_path(lab: str, node: str) -> str:
    return os.path.join(cni_dir(lab), node, f"10-{CNI_NETWORK}.conflist")


def cni_dir(lab: str) -> str:
    return os.path.join(state.lab_dir(lab), "cni")


def cni_socket(lab: str) -> str:
    return os.path.join(cni_dir(lab), "labkit-cni.sock")


def cni_bin_dir(lab: str) -> str:
    return os.path.join(cni_dir(lab), "bin")


def _cni_server_files(lab: str) -> tuple[str, str]:
    """The CNI server's pid file (`down` stops it through that) and its log."""
    return os.path.join(cni_dir(lab), "server.pid"), os.path.join(cni_dir(lab), "server.log")


def pod_netns(lab: str, namespace: str, pod: str) -> str:
    """Pods: `lk-<lab>.<ns>.<pod>`; nodes have one dot after the prefix, pods two."""
    return f"{netns_prefix(lab)}{namespace}.{pod}"


def pod_mtu(cluster: ClusterPlan) -> int | None:
    if cluster.mtu:
        return cluster.mtu
    return backends.pod_mtu(cluster.backend) if cluster.backend == "vxlan" else None


def system_manifests(plan: Plan) -> list[dict[str, Any]]:
    """What every cluster runs besides the user's workloads: the cluster DNS, as kubeadm sets it up
    (a kube-system Deployment behind the Service kube-system/kube-dns at `cluster.dns.ip`).

    Its pods' container runs nothing of the image: labkit starts the DNS server from the host
    into each pod's network namespace, so no image needs Python.
    """
    cluster = plan.cluster
    assert cluster is not None
    ports = [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]
    labels = {"k8s-app": DNS_APP}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": DNS_DEPLOYMENT, "namespace": "kube-system", "labels": labels},
         "spec": {"replicas": cluster.dns_replicas, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                      "name": "dns", "image": "labkit/node",
                      "ports": [{"name": p["name"], "containerPort": 53, "protocol": p["protocol"]}
                                for p in ports]}]}}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
         "spec": {"clusterIP": str(cluster.dns_ip), "selector": labels,
                  "ports": [{**p, "targetPort": 53} for p in ports]}},
    ]


def check_workloads(plan: Plan) -> None:
    """What can be checked without building anything: scheduling, ClusterIPs, NodePorts."""
    from labkit.k8s import schedule_pods
    from labkit.proxy import build_service_view

    workloads = workloads_of(plan)
    assert workloads is not None and plan.cluster is not None
    schedule_pods(workloads, [n.name for n in k8s_nodes(plan)])
    build_service_view(workloads, {}, service_cidr=str(plan.cluster.service_cidr), dns_ip=str(plan.cluster.dns_ip))


# ---------------------------------------------------------------- phase: pod network


def setup_pod_network(b: Build) -> None:
    """Per k8s-node: its CNI conflist, routes to every peer's podCIDR, masquerade for egress."""
    plan, cluster = b.plan, b.plan.cluster
    if cluster is None:
        return
    start_cni_server(plan.lab)  # first: it loads while the rest of the cluster is built
    nodes = [backends.ClusterNode(n.name, b.sandboxes[n.name].netns_path, str(n.mgmt_ipv4.ip), str(n.pod_cidr))
             for n in k8s_nodes(plan)]
    for node in nodes:
        write_conflist(os.path.dirname(conflist_path(plan.lab, node.name)), CNI_NETWORK, node.pod_cidr,
                       mtu=pod_mtu(cluster),
                       data_dir=os.path.join(state.lab_dir(plan.lab), "ipam", node.name))

    def wire(node: backends.ClusterNode) -> None:
        # a node's own processes reach ClusterIPs: DNAT in output needs a route first
        wiring.add_device_route(node.netns_path, str(cluster.service_cidr), "eth0")
        backends.apply_backend(cluster.backend, node, nodes)
        backends.apply_masquerade(node.netns_path, str(cluster.pod_cidr), pod_cidr=node.pod_cidr)

    try:
        on_every_node(wire, nodes)
    except backends.BackendError as exc:
        raise LabkitError(str(exc)) from None


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


def start_cni_server(lab: str) -> None:
    """The lab's CNI server, and the launcher that calls it in the lab's CNI bin dir, for runtimes
    that exec `labkit-cni` (labkit itself calls the plugin in-process). `down` stops it by its pid file."""
    from labkit.cni import server
    from labkit.cni.install import install_launcher

    pid_file, log = _cni_server_files(lab)
    os.makedirs(cni_dir(lab), exist_ok=True)
    write_atomic(pid_file, f"{server.start(cni_socket(lab), log)}\n")
    install_launcher(cni_bin_dir(lab), socket=cni_socket(lab), compile_bytecode=False)


def ensure_cni_server(b: Build) -> None:
    """`apply`: a lab whose CNI server died (killed by hand, a crash) gets a new one."""
    from labkit.cni import server
    from labkit.lab import stop_recorded_processes

    if server.is_serving(cni_socket(b.plan.lab)):
        return
    stop_recorded_processes(b.plan.lab, only=cni_dir(b.plan.lab))  # one that lives on must not outlive its pid file
    start_cni_server(b.plan.lab)
    wait_cni_server(b)


def wait_cni_server(b: Build) -> None:
    """`up` returns with the lab's CNI server listening, so an exec right after never runs in place."""
    from labkit.cni import server

    lab = b.plan.lab
    pid_file, log = _cni_server_files(lab)
    with open(pid_file, encoding="ascii") as fh:
        pid = int(fh.read())
    try:
        server.wait_serving(cni_socket(lab), pid, log, READY_TIMEOUT)
    except CNIError as e:
        raise LabkitError(f"{e.msg}: {e.details}") from None


# ---------------------------------------------------------------- phase: pods


def kubelet_resolv_conf(cluster: ClusterPlan, namespace: str) -> str:
    """What the kubelet writes for dnsPolicy ClusterFirst."""
    zone = cluster.domain
    return (f"nameserver {cluster.dns_ip}\n"
            f"search {namespace}.svc.{zone} svc.{zone} {zone}\n"
            "options ndots:5\n")


def kubelet_hosts(pod: Pod, ip: str, cluster: ClusterPlan) -> str:
    """What the kubelet writes into a pod's /etc/hosts."""
    names = [pod.hostname]
    if pod.spec.subdomain:
        names.insert(0, f"{pod.hostname}.{pod.spec.subdomain}.{pod.namespace}.svc.{cluster.domain}")
    return ("# Kubernetes-managed hosts file (labkit).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n"
            f"{ip}\t{' '.join(names)}\n")


def pod_spec(plan: Plan, pod: Pod, node: str, ip: str) -> PodSpec:
    cluster = plan.cluster
    assert cluster is not None
    containers = tuple(
        ContainerSpec(name=c.name, image=c.image, argv=tuple(c.command) + tuple(c.args),
                      env={e.name: e.value or "" for e in c.env})
        for c in pod.spec.containers
    )
    return PodSpec(namespace=pod.namespace, name=pod.name, node=node,
                   netns=pod_netns(plan.lab, pod.namespace, pod.name), hostname=pod.hostname,
                   hosts=kubelet_hosts(pod, ip, cluster), resolv_conf=kubelet_resolv_conf(cluster, pod.namespace),
                   containers=containers)


def start_pods(b: Build) -> None:
    """Every pod of the workloads, placed by the scheduler."""
    from labkit.k8s import schedule_pods

    workloads = workloads_of(b.plan)
    if workloads is None or not workloads.pods:
        return
    placement = schedule_pods(workloads, [n.name for n in k8s_nodes(b.plan)])
    start_pod_set(b, [(pod, placement[pod.key]) for pod in workloads.pods])


def start_pod_set(b: Build, todo: list[tuple[Pod, str]]) -> None:
    """Sandboxes (all at once where the runtime can), CNI ADD from each pod's node in a fixed
    order (so every run of a lab gives the same addresses), then the pods' own files and containers."""
    plan = b.plan
    first_specs = [pod_spec(plan, pod, node, ip="0.0.0.0") for pod, node in todo]
    create_many = getattr(b.runtime, "create_pods", None)
    sandboxes = (create_many(plan.lab, first_specs) if create_many
                 else [b.runtime.create_pod(plan.lab, spec) for spec in first_specs])
    records = []
    for (pod, node), spec, sandbox in zip(todo, first_specs, sandboxes, strict=True):
        records.append(PodRecord(pod.namespace, pod.name, node, None, spec.netns, sandbox.netns_path,
                                 labels=dict(pod.labels)))
    b.pods.extend(records)
    for (pod, node), sandbox, record in zip(todo, sandboxes, records, strict=True):
        try:
            result = execute_conflist("ADD", conflist_path(plan.lab, node), container_id=container_id(plan.lab, pod),
                                      netns=sandbox.netns_path, ifname=POD_IFNAME,
                                      node_netns=b.sandboxes[node].netns_path)
        except CNIError as exc:
            raise LabkitError(f"pod {pod.key} on {node}: CNI ADD failed: {exc}") from None
        record.ip = result["ips"][0]["address"].split("/")[0]

    def start(item: tuple) -> None:
        (pod, node), sandbox, record = item
        started = b.runtime.start_containers(plan.lab, pod_spec(plan, pod, node, record.ip), sandbox)
        if isinstance(started, Sandbox):
            record.pid = started.pid

    items = list(zip(todo, sandboxes, records, strict=True))
    workers = getattr(b.runtime, "workers", 1)
    if workers > 1:  # a container engine overlaps its calls; forks of this process would not gain
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(start, items))
    else:
        for item in items:
            start(item)


def sync_pods(b: Build) -> None:
    """`apply`: stop the pods the workloads no longer have, start the new ones; the others stay
    where they are, untouched (pods are not updated in place, as in Kubernetes)."""
    workloads = workloads_of(b.plan)
    wanted = {pod.key: pod for pod in (workloads.pods if workloads else ())}
    for record in [r for r in b.pods if f"{r.namespace}/{r.name}" not in wanted]:
        stop_pod(b, record)
    running = {f"{r.namespace}/{r.name}" for r in b.pods}
    load = {n.name: 0 for n in k8s_nodes(b.plan)}
    for record in b.pods:
        load[record.node] = load.get(record.node, 0) + 1
    todo = []
    for key, pod in wanted.items():
        if key in running:
            continue
        node = pod.spec.nodeName or min(load, key=lambda n: load[n])
        load[node] += 1
        todo.append((pod, node))
    if todo:
        start_pod_set(b, todo)


def stop_pod(b: Build, record: PodRecord) -> None:
    """Release the pod's address (CNI DEL from its node), then remove its sandbox and processes."""
    plan = b.plan
    try:
        execute_conflist("DEL", conflist_path(plan.lab, record.node),
                         container_id=f"{plan.lab}.{record.namespace}.{record.name}",
                         netns=record.netns_path, ifname=POD_IFNAME, node_netns=b.sandboxes[record.node].netns_path)
    except CNIError as exc:
        raise LabkitError(f"pod {record.namespace}/{record.name}: CNI DEL failed: {exc}") from None
    pidfile = os.path.join(dns_dir(plan.lab), f"{record.name}.pid")
    if record.namespace == "kube-system" and os.path.exists(pidfile):
        from labkit.runtime.netns import stop_pids

        with open(pidfile, encoding="ascii") as fh:
            stop_pids([int(fh.read().strip())])
        os.unlink(pidfile)
    b.runtime.remove_pod(plan.lab, Sandbox(plan.lab, f"{record.namespace}/{record.name}", record.netns_path,
                                           pid=record.pid))
    b.pods.remove(record)


def container_id(lab: str, pod: Pod) -> str:
    return f"{lab}.{pod.namespace}.{pod.name}"


def apply_services(b: Build) -> None:
    """Service views from the running pods, then the same kube-proxy table in every k8s-node.

    On `apply`, `b.previous_services` are the views applied before: UDP flows still pinned to
    endpoints that are gone get cleared from conntrack."""
    from labkit.proxy import apply_node_services, build_service_view

    plan, workloads = b.plan, workloads_of(b.plan)
    if workloads is None or plan.cluster is None:
        return
    pod_ips = {f"{p.namespace}/{p.name}": p.ip for p in b.pods if p.ip}
    pod_nodes = {f"{p.namespace}/{p.name}": p.node for p in b.pods}
    b.services = list(build_service_view(workloads, pod_ips, service_cidr=str(plan.cluster.service_cidr),
                                         dns_ip=str(plan.cluster.dns_ip), pod_nodes=pod_nodes))
    cluster = plan.cluster
    on_every_node(lambda node: apply_node_services(
        b.sandboxes[node.name].netns_path, b.services, pod_cidr=str(cluster.pod_cidr),
        node_ips=[str(node.mgmt_ipv4.ip)], previous=b.previous_services, node_name=node.name), k8s_nodes(plan))


def apply_policies(b: Build) -> None:
    """NetworkPolicies, compiled per node: egress judged where a pod sends, ingress where it receives."""
    from labkit.policy import apply_node_policies

    from labkit.policy import remove_node_policies

    plan, workloads = b.plan, workloads_of(b.plan)
    if workloads is None or not workloads.network_policies:
        if b.previous_services is not None:  # `apply`: the last policy may just have been removed
            for node in k8s_nodes(plan):
                remove_node_policies(b.sandboxes[node.name].netns_path)
        return
    pod_ips = {f"{p.namespace}/{p.name}": p.ip for p in b.pods if p.ip}
    pod_nodes = {f"{p.namespace}/{p.name}": p.node for p in b.pods}
    on_every_node(lambda node: apply_node_policies(
        b.sandboxes[node.name].netns_path, workloads, pod_ips, node_name=node.name, pod_nodes=pod_nodes,
        node_ips=[str(node.mgmt_ipv4.ip)]), k8s_nodes(plan))


def dns_config(plan: Plan, services: list, workloads: Workloads):
    """What the DNS server serves, from the service views (the same ones the data plane uses)."""
    from labkit.dns import records

    cluster = plan.cluster
    assert cluster is not None
    entries = []
    for view in services:
        ports = []
        for port in view.ports:
            target = port.endpoints[0].port if port.endpoints else port.target_port
            ports.append(records.ServicePort(port=port.port, name=port.name, protocol=port.protocol,
                                             target_port=target if isinstance(target, int) else None))
        entries.append(records.Service(
            namespace=view.namespace, name=view.name,
            type="Headless" if view.headless else view.type, cluster_ip=view.cluster_ip, ports=ports,
            endpoints=[records.Endpoint(ip=a.ip, hostname=a.hostname, pod=a.pod, node=a.node)
                       for a in view.addresses],
            external_name=view.external_name))
    return records.DnsConfig(zone=cluster.domain, services=entries, upstreams=list(cluster.dns_upstreams),
                             nameservers=[str(cluster.dns_ip)], namespaces=[n.name for n in workloads.namespaces])


def dns_dir(lab: str) -> str:
    return os.path.join(state.lab_dir(lab), "dns")


def start_dns(b: Build) -> None:
    """Write the DNS config, then start the server in each kube-dns pod's network namespace, from the host."""
    from labkit.dns.deploy import start_servers
    from labkit.dns.server import reload

    plan, workloads = b.plan, workloads_of(b.plan)
    if workloads is None or plan.cluster is None:
        return
    folder = dns_dir(plan.lab)
    config = os.path.join(folder, "config.json")
    os.makedirs(folder, exist_ok=True)
    dns_config(plan, b.services, workloads).dump(config)
    replicas = [p for p in b.pods if p.namespace == "kube-system" and p.labels.get("k8s-app") == DNS_APP]
    serving = [p for p in replicas if os.path.exists(os.path.join(folder, f"{p.name}.pid"))]
    for pod in serving:  # `apply`: running servers re-read the config (written atomically above)
        with open(os.path.join(folder, f"{pod.name}.pid"), encoding="ascii") as fh:
            reload(int(fh.read().strip()))
    start_servers(config, [(p.name, p.netns_path, p.ip) for p in replicas if p not in serving], folder,
                  workers=plan.cluster.dns_workers)


def _listening_tcp_ports() -> set[int]:
    """TCP ports listened on in the calling thread's network namespace."""
    ports = set()
    for table in ("/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"):
        try:
            with open(table, encoding="ascii") as fh:
                next(fh)
                for line in fh:
                    fields = line.split()
                    if fields[3] == "0A":  # LISTEN
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except FileNotFoundError:
            continue
    return ports


READY_TIMEOUT = 10.0


def wait_ready(b: Build) -> None:
    """Readiness: every TCP containerPort a pod declares is listened on before `up` returns, so a
    check or a test right after `up` never races a server that is still starting."""
    import time

    workloads = workloads_of(b.plan)
    if workloads is None:
        return
    declared = {pod.key: {p.containerPort for c in pod.spec.containers for p in c.ports if p.protocol == "TCP"}
                for pod in workloads.pods}
    waiting = [(record, declared.get(f"{record.namespace}/{record.name}", set())) for record in b.pods]
    waiting = [(record, ports) for record, ports in waiting if ports
               and not (record.namespace == "kube-system" and record.labels.get("k8s-app") == DNS_APP)]
    timeout = READY_TIMEOUT
    deadline = time.monotonic() + timeout
    while waiting:
        waiting = [(record, ports - netns.run_in_netns(record.netns_path, _listening_tcp_ports))
                   for record, ports in waiting]
        waiting = [(record, ports) for record, ports in waiting if ports]
        if not waiting:
            return
        if time.monotonic() > deadline:
            record, ports = waiting[0]
            raise LabkitError(f"pod {record.namespace}/{record.name}: nothing listens on containerPort "
                              f"{', '.join(map(str, sorted(ports)))} after {timeout:.0f} s; is its command right?")
        time.sleep(0.02)

