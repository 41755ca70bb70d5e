"""Phases `pods` and `readiness`: every pod's sandbox, address (CNI ADD) and containers; `apply`'s pod sync."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from labkit import paths, processes
from labkit.k8s.schedule import pick_node
from labkit.k8s.standin import StandIn, pod_stand_ins, program
from labkit.k8s.system import DNS_APP
from labkit.cni import attach
from labkit.cni.conflist import execute_conflist
from labkit.cni.dockerhost import port_mappings
from labkit.cni.errors import CNIError
from labkit.errors import LabkitError
from labkit.families import family_of
from labkit.k8s.multus import pod_attachments
from labkit.net import netns
from labkit.phases.build import PodRecord, k8s_nodes, workloads_of
from labkit.runtime import ContainerSpec, PodSpec, Sandbox
from labkit.runtime.podproc import capabilities
from labkit.topology.plan import ClusterPlan, Plan, netns_prefix, pod_netns

if TYPE_CHECKING:
    from labkit.k8s import Pod
    from labkit.phases.build import Build

POD_IFNAME = "eth0"
READY_TIMEOUT = 10.0  # seconds for every declared TCP containerPort to listen




def kubelet_resolv_conf(cluster: ClusterPlan, namespace: str) -> str:
    """What the kubelet writes for dnsPolicy ClusterFirst."""
    zone = cluster.domain
    return (f"nameserver {cluster.dns_ip}\n"
            f"search {namespace}.svc.{zone} svc.{zone} {zone}\n"
            "options ndots:5\n")


def kubelet_hosts(pod: Pod, ips: Sequence[str], cluster: ClusterPlan) -> str:
    """What the kubelet writes into a pod's /etc/hosts: a line per pod IP (a dual-stack pod's both)."""
    names = [pod.hostname]
    if pod.spec.subdomain:
        names.insert(0, f"{pod.hostname}.{pod.spec.subdomain}.{pod.namespace}.svc.{cluster.domain}")
    return ("# Kubernetes-managed hosts file (labkit).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n"
            + "".join(f"{ip}\t{' '.join(names)}\n" for ip in ips))


def pod_ips(result: Mapping, families: Sequence[int]) -> list[str]:
    """A CNI ADD result's addresses of the pod's interface, the cluster's preferred family first (the
    order of the pod's `status.podIPs`); a result with more than one of a family keeps the first."""
    interfaces = result.get("interfaces") or []
    mine = {i for i, iface in enumerate(interfaces) if iface.get("name") == POD_IFNAME and iface.get("sandbox")}
    found: dict[int, str] = {}
    for entry in result.get("ips") or []:
        if mine and entry.get("interface") is not None and entry["interface"] not in mine:
            continue  # a chained plugin's address of another interface
        address = str(entry["address"]).split("/")[0]
        found.setdefault(family_of(address), address)
    return [found[f] for f in sorted(found, key=lambda f: families.index(f) if f in families else len(families))]


def pod_spec(plan: Plan, pod: Pod, node: str, ips: Sequence[str],
             stand_ins: Mapping[str, StandIn] | None = None) -> PodSpec:
    """What the runtime needs to start `pod` (its `ips`, as the hosts file names them); `stand_ins`: its
    containers that run labkit's stand-in."""
    cluster = plan.cluster
    assert cluster is not None
    stand_ins = stand_ins or {}
    host_network = pod.spec.hostNetwork  # the node's namespace, hostname and /etc/hosts, as the kubelet does
    containers = tuple(
        ContainerSpec(name=c.name, image=c.image, argv=program(c), env={e.name: e.value or "" for e in c.env},
                      capabilities=capabilities(c.securityContext), command=tuple(c.command), args=tuple(c.args),
                      stand_in=stand_ins.get(c.name))
        for c in pod.spec.containers
    )
    return PodSpec(namespace=pod.namespace, name=pod.name, node=node,
                   netns=pod_netns(plan.lab, pod.namespace, pod.name),
                   hostname=node if host_network else pod.hostname,
                   hosts="" if host_network else kubelet_hosts(pod, ips, cluster),
                   resolv_conf=kubelet_resolv_conf(cluster, pod.namespace) if pod.spec.cluster_dns else "",
                   containers=containers, host_netns=plan.node(node).netns if host_network else None,
                   run_once=pod.spec.restartPolicy != "Always", ipv6=6 in cluster.families)


def start_pods(b: Build) -> None:
    """Every pod of the workloads, where the plan placed it."""
    workloads, allocation = workloads_of(b.plan), b.plan.allocation
    if workloads is None or allocation is None or not workloads.pods:
        return
    placement = allocation.placement
    start_pod_set(b, [(pod, placement[pod.key]) for pod in workloads.pods])


def start_pod_set(b: Build, todo: list[tuple[Pod, str]]) -> None:
    """Sandboxes (all at once where the runtime can), CNI ADD from each pod's node in a fixed
    order (so every run of a lab gives the same addresses), then the pods' own files and containers."""
    plan = b.plan
    assert plan.cluster is not None
    for pod, _ in todo:  # decided from the plan; of the system, only which images a container engine has
        b.stand_ins[pod.key] = pod_stand_ins(pod, plan.runtime, plan.cluster.stand_ins, b.runtime.has_image)
    first_specs = [pod_spec(plan, pod, node, ips=["0.0.0.0"]) for pod, node in todo]
    sandboxes = b.runtime.create_pods(plan.lab, first_specs)
    records = []
    for (pod, node), spec, sandbox in zip(todo, first_specs, sandboxes, strict=True):
        stand_ins = b.stand_ins[pod.key]
        records.append(PodRecord(pod.namespace, pod.name, node, None, spec.host_netns or spec.netns,
                                 sandbox.netns_path, labels=dict(pod.labels), host_network=bool(spec.host_netns),
                                 run_once=spec.run_once,
                                 containers=[{"name": c.name, "stand_in": s.reason if (s := stand_ins.get(c.name))
                                              else None} for c in pod.spec.containers]))
    b.pods.extend(records)
    note_stand_ins(b, [(pod, name, s) for pod, _ in todo for name, s in b.stand_ins[pod.key].items()])
    for (pod, node), sandbox, record in zip(todo, sandboxes, records, strict=True):
        if record.host_network:  # no CNI: the pod's addresses are its node's, one per cluster family
            record.ips = list(plan.node(node).node_ips(plan.cluster.families))
            record.ip = record.ips[0] if record.ips else None
            continue
        try:
            result = execute_conflist("ADD", paths.lab(plan.lab).conflist(node),
                                      container_id=container_id(plan.lab, pod.namespace, pod.name),
                                      netns=sandbox.netns_path, ifname=POD_IFNAME,
                                      node_netns=b.sandboxes[node].netns_path,
                                      capability_args=published(pod), cache_dir=result_cache(plan, node))
        except CNIError as exc:
            raise LabkitError(f"pod {pod.key} on {node}: CNI ADD failed: {exc}") from None
        record.ips = pod_ips(result, plan.cluster.families)
        if not record.ips:
            raise LabkitError(f"pod {pod.key} on {node}: CNI ADD gave no address for {POD_IFNAME}: {result}")
        record.ip = record.ips[0]
        record.network_status = [attach.status_entry(paths.CNI_NETWORK, POD_IFNAME, result, sandbox.netns_path,
                                                     default=True)]
        add_attachments(b, pod, record)

    def start(item: tuple) -> None:
        (pod, node), sandbox, record = item
        started = b.runtime.start_containers(plan.lab, pod_spec(plan, pod, node, record.ips, b.stand_ins[pod.key]),
                                             sandbox)
        if isinstance(started, Sandbox):
            record.pid = started.pid
            record.pid_start = processes.start_time(started.pid) if started.pid else None

    items = list(zip(todo, sandboxes, records, strict=True))
    try:
        if b.runtime.workers > 1:  # a container engine overlaps its calls; forks of this process would not gain
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(b.runtime.workers) as pool:
                list(pool.map(start, items))
        else:
            for item in items:
                start(item)
    except BaseException:
        try:
            b.runtime.finish_pods(plan.lab)
        except LabkitError:
            pass  # the first failure is the one to report
        raise
    b.runtime.finish_pods(plan.lab)


def note_stand_ins(b: Build, found: list[tuple[Pod, str, StandIn]], shown: int = 10) -> None:
    """`up` says which containers run labkit's stand-in and why (`status` lists them all)."""
    for pod, name, stand_in in found[:shown]:
        b.progress.note(f"stand-in for {pod.key} container {name}: {stand_in.reason}")
    if len(found) > shown:
        b.progress.note(f"... and {len(found) - shown} more containers run labkit's stand-in "
                        "(labkit status lists them)")


def add_attachments(b: Build, pod: Pod, record: PodRecord) -> None:
    """The pod's extra networks (its `k8s.v1.cni.cncf.io/networks`), after the cluster network, as Multus
    adds them; their network-status follows the cluster network's in the record."""
    workloads = workloads_of(b.plan)
    attachments = pod_attachments(pod, workloads.network_attachments) if workloads else ()
    if not attachments:
        return
    try:
        record.network_status += attach.add(
            b.plan.lab, pod.namespace, pod.name, record.node, attachments,
            container_id=container_id(b.plan.lab, pod.namespace, pod.name), netns_path=record.netns_path,
            node_netns=b.sandboxes[record.node].netns_path)
    except CNIError as exc:
        raise LabkitError(f"pod {pod.key} on {record.node}: CNI ADD failed: {exc}") from None


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
        if record.node in load:
            load[record.node] += 1
    todo = []
    for key, pod in wanted.items():
        if key in running:
            continue
        node = pick_node(pod.spec, load)
        load[node] = load.get(node, 0) + 1  # a docker-host named by nodeName is not in `load`
        todo.append((pod, node))
    if todo:
        start_pod_set(b, todo)


def stop_pod(b: Build, record: PodRecord) -> None:
    """Release the pod's extra networks and its address (CNI DEL from its node, last added first),
    then remove its sandbox and processes."""
    plan = b.plan
    try:
        attach.release(plan.lab, record.namespace, record.name)
        if not record.host_network:
            execute_conflist("DEL", paths.lab(plan.lab).conflist(record.node),
                             container_id=container_id(plan.lab, record.namespace, record.name),
                             netns=record.netns_path, ifname=POD_IFNAME,
                             node_netns=b.sandboxes[record.node].netns_path, cache_dir=result_cache(plan, record.node))
    except CNIError as exc:
        raise LabkitError(f"pod {record.namespace}/{record.name}: CNI DEL failed: {exc}") from None
    files = paths.lab(plan.lab)
    pid_file = files.dns_pid_file(record.name)
    if record.namespace == "kube-system" and os.path.exists(pid_file):
        server = processes.recorded(pid_file, marker=files.dir)  # never a pid reused since
        processes.stop([server] if server else [])
        os.unlink(pid_file)
    b.runtime.remove_pod(plan.lab, Sandbox(plan.lab, f"{record.namespace}/{record.name}", record.netns_path,
                                           pid=record.pid,
                                           labels={"host-network": "true"} if record.host_network else {}))
    b.pods.remove(record)


def remove_unrecorded_pods(b: Build) -> None:
    """`apply`: pod namespaces of this lab that its state does not record (an `apply` killed while
    it started pods) are released (CNI DEL from every node) and removed, so their names are free again."""
    recorded = {r.netns for r in b.pods}
    prefix = netns_prefix(b.plan.lab)
    files = paths.lab(b.plan.lab)
    for name in netns.list_namespaces(prefix):
        rest = name[len(prefix):]
        if name in recorded or "." not in rest:
            continue  # a node's, the mgmt network's, or a pod the state knows
        path, (namespace, pod) = netns.netns_path(name), rest.split(".", 1)
        try:
            attach.release(b.plan.lab, namespace, pod)
        except CNIError as exc:
            raise LabkitError(f"leftover pod namespace {name}: CNI DEL failed: {exc}") from None
        for node in b.plan.pod_hosts:
            try:
                execute_conflist("DEL", files.conflist(node.name),
                                 container_id=container_id(b.plan.lab, namespace, pod),
                                 netns=path, ifname=POD_IFNAME, node_netns=b.sandboxes[node.name].netns_path,
                                 cache_dir=result_cache(b.plan, node.name))
            except CNIError as exc:
                raise LabkitError(f"leftover pod namespace {name}: CNI DEL failed: {exc}") from None
        processes.stop_in_namespaces([path])
        netns.delete_namespace(name)
        shutil.rmtree(files.pod_dir(namespace, pod), ignore_errors=True)
        b.progress.note(f"removed {name}, left by an interrupted apply")


def published(pod: Pod) -> dict | None:
    """The `portMappings` capability of a pod's hostPorts (docker-hosts publish them with portmap)."""
    mappings = port_mappings(p for c in pod.spec.containers for p in c.ports)
    return {"portMappings": mappings} if mappings else None


def result_cache(plan: Plan, node: str) -> str | None:
    """Where a docker-host's ADD results and port mappings are kept for DEL (libcni's results cache):
    portmap removes a pod's DNAT only when DEL names its mappings again. labkit-cni needs none."""
    if not plan.node(node).kind_info.container_host:
        return None
    return os.path.join(paths.lab(plan.lab).conflist_dir(node), "results")


def pod_phase(runtime, lab: str, pod: dict) -> str:
    """A pod's phase as the API reports it: Running, or for a pod that runs once (restartPolicy
    Never/OnFailure: a Job's), Succeeded when every container exited 0, Failed when one did not."""
    if not pod.get("run_once"):
        return "Running"
    codes = runtime.exit_codes(lab, f"{pod['namespace']}/{pod['name']}")
    if not codes or any(code is None for code in codes):
        return "Running"
    return "Succeeded" if all(code == 0 for code in codes) else "Failed"


def finished(b: Build, record: PodRecord) -> bool:
    """A pod that ran to its end: no longer a Service endpoint."""
    return record.run_once and pod_phase(b.runtime, b.plan.lab, record.as_status()) != "Running"


def container_id(lab: str, namespace: str, pod: str) -> str:
    """The CNI container id of a pod: ADD and every later DEL must name it alike."""
    return f"{lab}.{namespace}.{pod}"


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


def _listening_in(netns_paths: list[str]) -> dict[str, set[int]]:
    """The TCP ports listened on in each namespace: one thread through them all, not a thread each."""
    found: dict[str, set[int]] = {}

    def look(path: str) -> None:
        found[path] = _listening_tcp_ports()

    netns.for_each_netns(netns_paths, look)
    return found


def _awaited(pod: Pod, stand_ins: Mapping[str, StandIn]) -> set[int]:
    """The declared TCP containerPorts of the pod's containers that run as written (a stand-in is
    awaited by the pid file it writes once every port it serves, TCP and UDP, is bound)."""
    return {p.containerPort for c in pod.spec.containers if c.name not in stand_ins
            for p in c.ports if p.protocol == "TCP"}


def wait_ready(b: Build) -> None:
    """Readiness: every TCP containerPort a pod declares is listened on, and every stand-in serves, before
    `up` returns, so a check or a test right after `up` never races a server that is still starting."""
    import time

    workloads = workloads_of(b.plan)
    if workloads is None:
        return
    files = paths.lab(b.plan.lab)
    pods = {pod.key: pod for pod in workloads.pods}
    waiting = []
    for record in b.pods:
        key = f"{record.namespace}/{record.name}"
        if key not in pods or (record.namespace == "kube-system" and record.labels.get("k8s-app") == DNS_APP):
            continue
        if record.run_once:  # a pod that runs once may be done before it listens: only pods that keep running
            continue
        stand_ins = b.stand_ins.get(key, {})
        folder = files.pod_dir(record.namespace, record.name)
        waiting.append((record, _awaited(pods[key], stand_ins),
                        {name: os.path.join(folder, f"{name}.pid") for name in stand_ins}))
    timeout = READY_TIMEOUT
    deadline = time.monotonic() + timeout
    while waiting := [(r, ports, pids) for r, ports, pids in waiting if ports or pids]:
        with_ports = [r.netns_path for r, ports, _ in waiting if ports]
        listening = _listening_in(with_ports) if with_ports else {}
        waiting = [(r, ports - listening.get(r.netns_path, set()),
                    {name: f for name, f in pids.items() if not os.path.exists(f)}) for r, ports, pids in waiting]
        if not any(ports or pids for _, ports, pids in waiting):
            return
        if time.monotonic() > deadline:
            record, ports, pids = next((r, ports, pids) for r, ports, pids in waiting if ports or pids)
            key = f"{record.namespace}/{record.name}"
            if pids:
                logs = ", ".join(f[:-len(".pid")] + ".log" for f in pids.values())
                raise LabkitError(f"pod {key}: labkit's stand-in of container {', '.join(pids)} does not serve "
                                  f"after {timeout:.0f} s; see {logs}")
            listed = ", ".join(map(str, sorted(ports)))
            raise LabkitError(f"pod {key}: nothing listens on containerPort {listed} after {timeout:.0f} s; "
                              "is its command right?")
        time.sleep(0.02)
