"""The one orchestration pipeline: plan -> up / apply / down / status / exec.

`up` and `apply` are phase tables (UP, APPLY below): named phases run in order,
each only when its condition holds for the plan. If a phase of `up` fails,
everything already built is removed (by `down`, which works from what exists)
and the cause is reported. The phases themselves are in labkit.phases.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from labkit import paths, processes, rootless, state, verify
from labkit.cni import attach
from labkit.errors import LabkitError
from labkit.families import family_name
from labkit.files import umask
from labkit.lock import lab_lock
from labkit.net import netns, wiring
from labkit.phases import bgp, cni, dns, impair, ingress, lb, nodes, pods, services
from labkit.phases.build import Build, PodRecord
from labkit.progress import Progress
from labkit.runtime import Runtime, Sandbox, get_runtime
from labkit.topology import load_plan
from labkit.topology.plan import Plan, host_link_name, netns_prefix

__all__ = ["APPLY", "UP", "Build", "apply", "down", "exec_in", "get_runtime", "graph_summary", "known_labs",
           "leftovers", "render_trace", "status", "summarize", "trace", "up", "validate", "verify_lab",
           "verify_labs", "verify_topology"]

# ---------------------------------------------------------------- the phase tables

Phase = tuple[str, Callable[[Build], None], Callable[[Plan], bool]]


def always(plan: Plan) -> bool:
    return True


def with_cluster(plan: Plan) -> bool:
    return plan.cluster is not None


def with_host_access(plan: Plan) -> bool:
    return bool(plan.mgmt and plan.mgmt.host_access)


def with_ports(plan: Plan) -> bool:
    return any(n.container and n.container.ports for n in plan.nodes)


UP: tuple[Phase, ...] = (
    ("nodes", nodes.create_nodes, always),
    ("links", nodes.create_links, always),
    ("addresses and routes", nodes.configure_nodes, always),
    ("impairments", impair.apply_impairments, impair.with_impairments),  # tc/nft on link ends that are up
    ("host access", nodes.connect_host, with_host_access),
    ("pod network", cni.setup_pod_network, with_cluster),  # starts the CNI server first
    ("bgp", bgp.start_bgp, bgp.with_bgp),  # backend bgp: a BIRD per node; sessions come up meanwhile
    ("pods", pods.start_pods, with_cluster),
    ("services", services.apply_services, with_cluster),
    ("dns", dns.start_dns, with_cluster),
    ("policies", services.apply_policies, with_cluster),
    ("ingress", ingress.start_ingress, ingress.with_ingress),  # HAProxy in the proxy pods (labkit.ingress)
    ("exec", nodes.run_exec, always),
    ("ports", nodes.publish_ports, with_ports),  # containerlab's `ports`, forwarded into the nodes
    ("cni server", cni.wait_cni_server, with_cluster),  # listening before `up` returns
    ("bgp routes", bgp.wait_bgp, bgp.with_bgp),  # every node holds every other node's pod route
    ("load balancers", lb.apply_load_balancers, lb.with_load_balancers),  # L2 speakers; BGP /32s
    ("readiness", pods.wait_ready, with_cluster),
)

APPLY: tuple[Phase, ...] = (  # a running cluster lab's workloads; nodes and links stay as they are
    ("cni server", cni.ensure_cni_server, with_cluster),  # one that died is replaced
    ("bgp", bgp.ensure_bgp, bgp.with_bgp),  # configs re-read; a BGP daemon that died is started again
    ("leftover pods", pods.remove_unrecorded_pods, with_cluster),  # of an `apply` killed half way
    ("pods", pods.sync_pods, with_cluster),
    ("services", services.apply_services, with_cluster),
    ("dns", dns.start_dns, with_cluster),
    ("policies", services.apply_policies, with_cluster),
    ("ingress", ingress.start_ingress, ingress.with_ingress),  # reloaded: established connections stay
    ("load balancers", lb.apply_load_balancers, lb.with_load_balancers),
    ("readiness", pods.wait_ready, with_cluster),
)


# ---------------------------------------------------------------- up / apply


def up(path: str, runtime: str | None = None, progress: Progress | None = None,
       name: str | None = None, stand_in: bool = False) -> dict[str, Any]:
    """Build the lab in `path` (named `name` if given); on any failure remove everything built and raise.
    `stand_in`: containers whose image the engine lacks run labkit's stand-in (as `cluster.stand-ins: true`)."""
    progress = progress or Progress()
    if name is not None:
        paths.check_lab_name(name)
    plan = load_plan(path, runtime, name)
    rootless.check_plan(plan.runtime, with_host_access(plan))
    if stand_in and plan.cluster is not None:
        plan = dataclasses.replace(plan, cluster=dataclasses.replace(plan.cluster, stand_ins=True))
    rt = get_runtime(plan.runtime)
    with lab_lock(plan.lab, "up"), umask():  # one verb at a time; files and servers never take the caller's umask
        return _up(path, plan, rt, progress)


def _up(path: str, plan: Plan, rt: Runtime, progress: Progress) -> dict[str, Any]:
    if plan.lab in known_labs():
        raise LabkitError(f"lab {plan.lab!r} is already up; take it down first: labkit down --name {plan.lab}")
    for note in plan.notes:  # keys this runtime leaves without effect, said once
        progress.note(f"note: {note}")
    build = Build(plan, rt, progress)
    from labkit.topology.workloads import plan_notes

    for note in plan_notes(plan):
        progress.note(f"note: {note}")
    state.write(plan.lab, {"name": plan.lab, "runtime": plan.runtime, "source": os.path.abspath(path),
                           "phase": "starting", "created": time.time(),
                           "stand_ins": plan.cluster.stand_ins if plan.cluster else None})
    _run_phases(build, UP, undo=True)
    return _record(build)


def apply(path: str, name: str | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Bring a running lab's workloads in line with its file: new pods start, removed ones stop,
    services, DNS and policies are re-applied. Nodes and links must be as they were at `up`."""
    progress = progress or Progress()
    if name is not None:
        paths.check_lab_name(name)
    plan = load_plan(path, None, name)
    with lab_lock(plan.lab, "apply"), umask():
        return _apply(path, plan, progress)


def _apply(path: str, plan: Plan, progress: Progress) -> dict[str, Any]:
    recorded = state.read(plan.lab) or {}
    summary = recorded.get("summary")
    if not isinstance(summary, dict):
        raise LabkitError(f"lab {plan.lab!r} is not up: labkit up {path}")
    plan = dataclasses.replace(plan, runtime=summary["runtime"])
    if plan.cluster is None:
        raise LabkitError(f"lab {plan.lab!r} has no cluster: apply changes workloads only")
    if recorded.get("stand_ins") is True:  # `up --stand-in` holds for the lab's later pods too
        plan = dataclasses.replace(plan, cluster=dataclasses.replace(plan.cluster, stand_ins=True))
    if _shape(summarize(plan)) != _shape(summary):
        raise LabkitError(f"the nodes or links of {path} changed since lab {plan.lab!r} came up; "
                          f"rebuild it: labkit up --reconfigure {path}")
    build = Build(plan, get_runtime(plan.runtime), progress)
    build.sandboxes = {n["name"]: Sandbox(plan.lab, n["name"], n["netns_path"]) for n in summary["nodes"]}
    build.pods = [PodRecord(p["namespace"], p["name"], p["node"], p["ip"], p["netns"], p["netns_path"],
                        p["pid"], p["labels"], p.get("pid_start"), p.get("host_network", False),
                        p.get("run_once", False), p.get("network_status") or [], p.get("containers", []),
                        p.get("ips") or [])
                   for p in summary["pods"]]
    from labkit.proxy import ServiceView

    build.previous_services = [ServiceView.model_validate(v) for v in recorded.get("service_views", [])]
    try:
        _run_phases(build, APPLY, undo=False)
    finally:  # what did change is recorded, so status, exec and down see the lab as it is
        summary = _record(build)
    return summary


def _shape(summary: dict[str, Any]) -> list:
    """What `apply` may not change: nodes (name, kind, interfaces) and links."""
    return [[(n["name"], n["kind"], [(i["name"], i["ipv4"], i.get("ipv6", [])) for i in n["interfaces"]])
             for n in summary["nodes"]],
            [(link["a"], link["b"]) for link in summary["links"]]]


def _run_phases(build: Build, phases: Sequence[Phase], *, undo: bool) -> None:
    """Run the phases whose condition holds, in order, timing each; on failure undo the lab (up)
    or stop where it is (apply)."""
    plan, progress = build.plan, build.progress
    for phase_name, phase, condition in phases:
        if not condition(plan):
            continue
        started = time.perf_counter()
        try:
            with progress.phase(phase_name):
                phase(build)
            build.timings[phase_name] = round(time.perf_counter() - started, 4)
        except BaseException as exc:
            if undo:
                progress.note(f"{phase_name} failed; removing what was built")
                try:
                    down(plan.lab, runtimes=(build.runtime,))
                except LabkitError as undo_failure:  # report the cause, not the undo's own trouble
                    progress.note(f"undo incomplete ({undo_failure}); run: labkit down --name {plan.lab}")
            if isinstance(exc, (LabkitError, OSError)):  # NetlinkError is an OSError
                verb = "up" if undo else "apply"
                hint = "" if undo else " (the lab is partly updated; labkit up --reconfigure rebuilds it)"
                raise LabkitError(f"{verb} failed at phase '{phase_name}': {exc}{hint}") from exc
            raise


def _record(build: Build) -> dict[str, Any]:
    """Write what the lab is now into its state (status, exec, apply and down read it)."""
    plan = build.plan
    summary = summarize(plan, build)
    state.write(plan.lab, {**(state.read(plan.lab) or {}), "phase": "up", "summary": summary,
                           "service_views": [v.model_dump(mode="json") for v in build.services]})
    build.progress.note(f"lab {plan.lab} is up: {len(plan.nodes)} nodes, {len(plan.links)} links"
                        + (f", {len(build.pods)} pods" if build.pods else ""))
    return summary


def summarize(plan: Plan, build: Build | None = None) -> dict[str, Any]:
    """What status reports about a lab (the JSON keys of DESIGN.md section 4)."""
    files = paths.lab(plan.lab)
    speakers = {s.node: s for s in _bgp_speakers(plan)}
    nodes = []
    for node in plan.nodes:
        nodes.append({
            "name": node.name, "kind": node.kind, "netns": node.netns,
            "netns_path": build.sandboxes[node.name].netns_path if build else None,
            "mgmt_ipv4": str(node.mgmt_ipv4.ip) if node.mgmt_ipv4 else None,
            "mgmt_ipv6": str(node.mgmt_ipv6.ip) if node.mgmt_ipv6 else None,
            "pod_cidr": str(node.pod_cidr) if node.pod_cidr else None,
            "pod_cidrs": [str(c) for c in node.pod_cidrs],  # one per cluster family, the preferred first
            **({"hosts": dict(node.hosts)} if node.hosts else {}),  # the node's own /etc/hosts entries
            "interfaces": [{"name": i.name, "ipv4": [str(a) for a in i.addresses if a.version == 4],
                            "ipv6": [str(a) for a in i.addresses if a.version == 6],
                            "peer": f"{i.peer_node}:{i.peer_ifname}" if i.peer_node else None}
                           for i in node.interfaces],
            **({"bgp": _bgp_status(plan.lab, speakers[node.name])} if node.name in speakers else {}),
        })
    return {
        "name": plan.lab, "title": plan.title or plan.lab, "runtime": plan.runtime, "source": plan.source,
        "nodes": nodes,
        "links": [{"a": f"{link.a.node}:{link.a.ifname}", "b": f"{link.b.node}:{link.b.ifname}"}
                  for link in plan.links],
        "mgmt": {"netns": plan.mgmt.netns, "subnet": str(plan.mgmt.subnet),
                 "subnet6": str(plan.mgmt.subnet6) if plan.mgmt.subnet6 else None,
                 "host_access": plan.mgmt.host_access} if plan.mgmt else None,
        "cluster": _cluster_status(plan),
        "pods": [p.as_status() for p in build.pods] if build else [],
        "services": [s.as_status() for s in build.services] if build else [],
        "dns": {"ip": str(plan.cluster.dns_ip), "ips": [str(ip) for ip in plan.cluster.dns_ips],
                "domain": plan.cluster.domain} if plan.cluster else None,
        "cni": {"bin_dir": files.cni_bin_dir, "socket": files.cni_socket, "backend": plan.cluster.backend,
                "mode": plan.cluster.mode, "masquerade": plan.cluster.masquerade,
                "conflists": {n.name: files.conflist(n.name) for n in plan.pod_hosts}}
        if plan.cluster else None,
        "timings": dict(build.timings) if build else {},
        "not_acted_on": _not_acted_on(plan),
        "ingress": ingress.ingress_status(build) if build else None,  # the HTTP front door (labkit.ingress)
    }


def _cluster_status(plan: Plan) -> dict[str, Any] | None:
    """The cluster's address families (Kubernetes' names, the preferred first) and its CIDRs per family."""
    if plan.cluster is None:
        return None
    return {"ip_families": [family_name(f) for f in plan.cluster.families],
            "pod_cidrs": [str(c) for c in plan.cluster.pod_cidrs],
            "service_cidrs": [str(c) for c in plan.cluster.service_cidrs]}


def _bgp_speakers(plan: Plan) -> list:
    from labkit.bgp import speakers

    return speakers(plan)


def _bgp_status(lab: str, speaker: Any) -> dict[str, Any]:
    """`nodes[].bgp` as recorded: the speaker's AS, router id, sessions and control socket (status adds
    the sessions' states and the routes, live)."""
    from labkit.bgp import TIMERS, files_of

    return {**speaker.as_status(), "socket": files_of(lab, speaker.node).socket, "timers": TIMERS.as_status()}


def _bgp_live(node: dict[str, Any]) -> None:
    """Fill a node's `bgp` with what its daemon says now (birdc): each session's state, the routes."""
    from labkit.bgp import live

    found = live(node["bgp"]["socket"])
    states = {s["name"]: s for s in found.get("sessions", [])}
    for session in node["bgp"]["sessions"]:
        now = states.get(session["name"], {})
        session["state"] = now.get("state", "unknown")
        session["since"] = now.get("since")
        session["info"] = now.get("info", "")
    node["bgp"]["routes"] = found.get("routes", [])
    if "error" in found:
        node["bgp"]["error"] = found["error"]


def _not_acted_on(plan: Plan) -> dict[str, list]:
    from labkit.topology.workloads import not_acted_on

    return not_acted_on(plan)


# ---------------------------------------------------------------- down


def down(lab: str, runtimes: Sequence[Runtime] | None = None) -> bool:
    """Remove everything of `lab` that exists; True if there was anything. Idempotent."""
    paths.check_lab_name(lab)  # a name that is no lab's never becomes a path or a prefix
    with lab_lock(lab, "down"), umask():  # the lock file goes with the lab when the lock is let go
        return _down(lab, runtimes)


def _down(lab: str, runtimes: Sequence[Runtime] | None) -> bool:
    existed = lab in known_labs()
    recorded = state.read(lab) or {}
    if runtimes is None and recorded.get("runtime"):
        runtimes = [get_runtime(recorded["runtime"])]
    elif runtimes is None:  # no state (deleted, or a crash before it was written): ask the engine too
        docker, docker_labs = _docker_engine_labs()
        runtimes = [get_runtime("netns"), *([docker] if docker else [])]
        existed = existed or lab in docker_labs
    attach.release_all(lab)  # pods' extra networks: CNI DEL from their nodes while those still exist
    processes.stop_recorded(paths.lab_dir(lab), marker=paths.lab_dir(lab))  # the lab's servers, by their pid files
    # Servers whose pid files are gone (the state folder deleted by hand): found by the state
    # paths they were started with.
    strays = processes.find_naming(paths.lab_dir(lab))
    existed = existed or bool(strays)
    processes.stop(strays)
    for rt in runtimes:
        if rt.name != "netns":
            rt.destroy(lab)
    # Last, and whatever the node runtime: the lab's own namespaces (mgmt, netns nodes and pods).
    get_runtime("netns").destroy(lab)
    _remove_host_link(lab)
    state.remove(lab)
    return existed


def _remove_host_link(lab: str) -> None:
    wiring.remove_host_link(host_link_name(lab))
    wiring.remove_lab_host_links(lab)  # the host ends of containerlab `host` links, by their mark


def known_labs(*, containers: bool = False) -> set[str]:
    """Labs by state folder and namespaces; with `containers`, also by the labels of the Docker
    engine's containers (when an engine is there: a docker lab whose state was deleted)."""
    found = state.labs() | {n for n in get_runtime("netns").labs() if paths.is_lab_name(n)}
    if containers:
        found |= {n for n in _docker_engine_labs()[1] if paths.is_lab_name(n)}
    return found


def _docker_engine_labs() -> tuple[Runtime | None, set[str]]:
    """The docker runtime and the labs its engine's containers belong to (one listing); (None, empty)
    when no engine answers: a machine without Docker has no docker labs."""
    from labkit.runtime.engine import engine_url

    url = engine_url()
    if rootless.joined():  # the engine is root's: a user's labs are never docker's
        return None, set()
    if url.startswith("unix://") and not os.path.exists(url[len("unix://"):]):
        return None, set()
    rt = get_runtime("docker")
    try:
        return rt, rt.labs()
    except LabkitError:
        return None, set()


# ---------------------------------------------------------------- status / exec


def status(lab: str | None = None) -> list[dict[str, Any]]:
    """What each lab is, and whether its parts still run: `phase` is "degraded" (with the reasons in
    `health.problems`) when a node, pod, DNS server or the CNI server of a lab that is up is gone."""
    if lab is not None:
        paths.check_lab_name(lab)
    names = [lab] if lab else sorted(known_labs())
    result = []
    for name in names:
        recorded = state.read(name)
        if recorded is None and name not in known_labs():
            raise LabkitError(f"no lab named {name!r} is up (labs: {', '.join(sorted(known_labs())) or 'none'})")
        summary = (recorded or {}).get("summary")
        if not isinstance(summary, dict):
            summary = {"name": name, "nodes": [], "pods": [], "services": [], "dns": None,
                       "runtime": (recorded or {}).get("runtime")}
        present = set(netns.list_namespaces(netns_prefix(name)))
        for node in summary.get("nodes", []):
            node["running"] = node["netns"] in present if summary.get("runtime") == "netns" else None
        phase = (recorded or {}).get("phase", "unknown (no state file)")
        for node in summary.get("nodes", []):
            if isinstance(node.get("bgp"), dict) and phase == "up":
                _bgp_live(node)
        if phase == "up":
            _lb_live(name, summary)
        problems = health_problems(name, summary, present) if phase == "up" else []
        _pod_phases(name, summary)
        summary["phase"] = "degraded" if problems else phase
        summary["impairments"] = impair.status_of(recorded, summary)  # from the kernel; None: cannot be read
        summary["health"] = {"ok": not problems and phase == "up", "problems": problems}
        result.append(summary)
    return result


def _lb_live(lab: str, summary: dict[str, Any]) -> None:
    """Each L2 LoadBalancer's `announcing_node`: the node whose speaker answers ARP for it now (None: nobody)."""
    services = [s for s in summary.get("services", []) if isinstance(s.get("load_balancer"), dict)]
    if not any(s["load_balancer"].get("l2_nodes") for s in services):
        return
    from labkit.lb import announce

    nodes = [n["name"] for n in summary.get("nodes", []) if n.get("kind") == "k8s-node"]
    now = announce.announcing(lab, nodes)
    for svc in services:
        lb = svc["load_balancer"]
        if lb.get("l2_nodes"):
            lb["announcing_node"] = now.get(lb.get("ip") or "")
    summary["lb_speakers"] = {n: announce.running(lab, n) is not None for n in nodes}


def _pod_phases(lab: str, summary: dict[str, Any]) -> None:
    """Each pod's `phase` (Running; Succeeded or Failed once a pod that runs once is done)."""
    from labkit.phases.pods import pod_phase

    pods = summary.get("pods", [])
    if not any(p.get("run_once") for p in pods):
        for pod in pods:
            pod["phase"] = "Running"
        return
    rt = get_runtime(summary.get("runtime") or "netns")
    for pod in pods:
        pod["phase"] = pod_phase(rt, lab, pod)


def health_problems(lab: str, summary: dict[str, Any], present: set[str]) -> list[str]:
    """What of a lab that came up is gone now: node namespaces, pod holders, DNS servers, the CNI server."""
    from labkit.k8s import edge
    from labkit.k8s.system import DNS_APP

    files = paths.lab(lab)
    problems = []
    netns_runtime = summary.get("runtime") == "netns"
    for node in summary.get("nodes", []):
        if netns_runtime and node.get("running") is False:
            problems.append(f"node {node['name']}: namespace {node['netns']} is gone")
    for pod in summary.get("pods", []):
        key = f"{pod['namespace']}/{pod['name']}"
        if netns_runtime and pod.get("netns") not in present:
            problems.append(f"pod {key}: namespace {pod.get('netns')} is gone")
        elif netns_runtime and pod.get("pid") and _pod_holder(pod) is None:
            problems.append(f"pod {key}: its holder process {pod['pid']} is gone")
        for container in pod.get("containers") or []:  # labkit's stand-ins, by the pid files they write
            pid_file = os.path.join(files.pod_dir(pod["namespace"], pod["name"]), f"{container.get('name')}.pid")
            if container.get("stand_in") and processes.recorded(pid_file, marker=files.dir) is None:
                problems.append(f"pod {key}: the stand-in of container {container['name']} is not running")
        if pod["namespace"] == "kube-system" and pod.get("labels", {}).get("k8s-app") == DNS_APP:
            if processes.recorded(files.dns_pid_file(pod["name"]), marker=files.dir) is None:
                problems.append(f"DNS server of pod {key} is not running (labkit apply restarts it)")
    if summary.get("ingress"):  # the ingress controller's HAProxy in each of its proxy pods
        folder = files.path("ingress")
        for pod in summary.get("pods", []):
            if pod["namespace"] == edge.NAMESPACE and edge.APP_LABEL.items() <= pod.get("labels", {}).items():
                if processes.recorded(os.path.join(folder, f"{pod['name']}.pid"), marker=folder) is None:
                    problems.append(f"HAProxy of ingress pod {pod['namespace']}/{pod['name']} is not running "
                                    "(labkit apply restarts it)")
    for node in summary.get("nodes", []):
        if isinstance(node.get("bgp"), dict):
            from labkit.bgp import files_of, running

            if running(files_of(lab, node["name"])) is None:
                problems.append(f"BGP daemon of node {node['name']} is not running (labkit apply restarts it)")
    for node, runs in (summary.get("lb_speakers") or {}).items():
        if not runs:
            problems.append(f"L2 speaker of node {node} is not running (labkit apply restarts it)")
    if summary.get("cni"):  # by its pid file, as the DNS servers: the socket is root's alone, status is anyone's
        if processes.recorded(files.cni_server_pid, marker=files.dir) is None:
            problems.append("the CNI server is not running (labkit apply restarts it)")
    return problems


def _pod_holder(pod: dict[str, Any]) -> int | None:
    """The pod's recorded holder pid, if that process still runs (same start time, when recorded)
    and still holds the pod's network namespace; None otherwise."""
    pid = pod.get("pid")
    if not isinstance(pid, int) or pid <= 1:
        return None
    start = pod.get("pid_start")
    if not processes.is_running(processes.ProcessId(pid, start if isinstance(start, int) else None)):
        return None
    try:
        mine = os.stat(pod["netns_path"])
        theirs = os.stat(f"/proc/{pid}/ns/net")
    except PermissionError:  # an ordinary user's `status` cannot look into root's processes: it runs
        return pid
    except (OSError, KeyError, TypeError):
        return None
    return pid if (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino) else None


def sandbox_of(lab: str, target: str) -> tuple[Runtime, Sandbox]:
    paths.check_lab_name(lab, "lab")
    recorded = state.read(lab)
    if recorded is None or not isinstance(recorded.get("summary"), dict):
        raise LabkitError(f"no lab named {lab!r} is up (labs: {', '.join(sorted(known_labs())) or 'none'})")
    summary = recorded["summary"]
    rt = get_runtime(summary["runtime"])
    if "/" in target:
        pod = next((p for p in summary["pods"] if f"{p['namespace']}/{p['name']}" == target), None)
        if pod is None:
            names = ", ".join(f"{p['namespace']}/{p['name']}" for p in summary["pods"]) or "none"
            raise LabkitError(f"lab {lab!r} has no pod {target!r} (pods: {names})")
        pid = pod.get("pid")
        if pid and summary["runtime"] == "netns" and _pod_holder(pod) is None:
            # never enter a process that is not the pod's: its pid may belong to anything by now
            raise LabkitError(f"pod {target} of lab {lab!r} is not running (its holder process {pid} is gone); "
                              f"labkit down --name {lab}, then up, rebuilds it")
        return rt, Sandbox(lab, target, pod["netns_path"], pid=pid)
    node = next((n for n in summary["nodes"] if n["name"] == target), None)
    if node is None:
        names = ", ".join(n["name"] for n in summary["nodes"])
        raise LabkitError(f"lab {lab!r} has no node {target!r} (nodes: {names})")
    return rt, Sandbox(lab, target, node["netns_path"] or netns.netns_path(node["netns"]))


def exec_in(lab: str, target: str, argv: Sequence[str]) -> int:
    """Run argv in a node of a running lab; its exit code passes through.

    `birdc` (without -s) in a node running BGP talks to that node's BIRD: it runs on the host with the
    daemon's control socket, so it works under every runtime and no image needs it."""
    socket = _bird_socket(lab, target) if argv[:1] == ["birdc"] and "-s" not in argv else None
    if socket is not None:
        import subprocess

        return subprocess.run(["birdc", "-s", socket, *argv[1:]], check=False).returncode
    rt, sandbox = sandbox_of(lab, target)
    code, _ = rt.exec(sandbox, argv)
    return code


def _bird_socket(lab: str, target: str) -> str | None:
    """The control socket of `target`'s BGP daemon, if it is a node of `lab` that runs one."""
    sandbox_of(lab, target)  # the lab and the node exist, or one clear error
    summary = (state.read(lab) or {}).get("summary") or {}
    node = next((n for n in summary.get("nodes", []) if n.get("name") == target), {})
    return node.get("bgp", {}).get("socket") if isinstance(node.get("bgp"), dict) else None


def _netem_target(lab: str, where: str) -> tuple[str, str, str]:
    """`NODE:IFACE` or `NS/POD:IFACE` -> (target, netns path, interface)."""
    target, sep, ifname = where.rpartition(":")
    if not sep or not target or not ifname:
        raise LabkitError(f"{where!r} is not NODE:IFACE or NS/POD:IFACE (e.g. w1:eth1)")
    _, sandbox = sandbox_of(lab, target)
    return target, sandbox.netns_path, ifname


def netem(lab: str, where: str, values: Mapping[str, object] | None) -> list[dict[str, Any]]:
    """`labkit netem LAB NODE:IFACE --delay 50ms ...`: these impairments, and only these, on that
    interface's egress (None or nothing given: clear it). Returns what is in force there now."""
    from labkit.topology.impairment import Impairment

    try:
        imp = Impairment.from_values(dict(values or {}))
    except ValueError as exc:
        raise LabkitError(str(exc)) from None
    target, path, ifname = _netem_target(lab, where)
    with lab_lock(lab, "netem"), umask():
        return impair.set_live(lab, (state.read(lab) or {})["summary"], target, path, ifname, imp)


def netem_show(lab: str) -> list[dict[str, Any]]:
    """Every impairment in force in the lab (every node and pod asked), read back from the kernel."""
    summary = status(lab)[0]
    return impair.in_force(impair.targets_of(summary), impair.holders_of(summary))


def capture(lab: str, target: str, output: str | None, filter_words: Sequence[str]) -> int:
    """`labkit capture LAB TARGET[:IFACE] [-w FILE] [-- FILTER]`: tcpdump in a node's or pod's namespace
    until Ctrl-C or `down` (labkit.capture); every interface when no IFACE is given."""
    from labkit import capture as capturing

    name, sep, ifname = target.rpartition(":")
    if not sep:
        name, ifname = target, None
    _, sandbox = sandbox_of(lab, name)
    return capturing.run(lab, sandbox.netns_path, ifname or None, filter_words, output, where=target)


def events(lab: str, emit: Callable[[Any], None], stopped: Callable[[], bool] = lambda: False,
           ready: Callable[[list[str]], None] = lambda names: None) -> None:
    """`labkit events LAB`: every change in the lab (labkit.events) until stopped() or the lab goes down."""
    from labkit import events as watching

    if lab not in known_labs():
        raise LabkitError(f"no lab named {lab!r} is up (labs: {', '.join(sorted(known_labs())) or 'none'})")
    watching.watch(lab, emit, stopped, ready)


def graph_summary(topology: str | Path | None = None, name: str | None = None) -> dict[str, Any]:
    """What `labkit graph` draws: the running lab's status when that lab is up (with its pods
    and services), else the plan of the topology file (no root needed, nothing created).

    `name` is the lab's name (`--name`); without it, the name in the topology file.
    """
    plan = load_plan(topology, name=name) if topology else None
    lab_name = name or (plan.lab if plan else None)
    if not lab_name:
        raise LabkitError("name a topology file, or a lab that is up with --name")
    try:
        running = status(lab_name)[0] if lab_name in known_labs() else None
    except (LabkitError, OSError):
        running = None
    if running and running.get("nodes"):
        return running
    if plan is None:
        raise LabkitError(f"no lab named {lab_name!r} is up; name its topology file to draw it from the file")
    return summarize(plan)


# ---------------------------------------------------------------- verify

def verify_lab(name: str, expects: Sequence[verify.Expect | Mapping[str, Any]] | None = None,
               timeout: float = verify.DEFAULT_TIMEOUT, retry: int = 0, topology: str | None = None) -> verify.Report:
    """Check a running lab: `expects`, or the `expect:` of `topology`, or of the topology file it was
    brought up from (its state records the file's absolute path at `up`). verify.CannotCheck (exit
    code 2) when the lab is not up, the file is gone, or there is nothing to check."""
    try:
        found = status(name)[0]
    except LabkitError as exc:
        raise verify.CannotCheck(str(exc)) from None
    if found.get("phase") not in ("up", "degraded") or not found.get("nodes"):
        raise verify.CannotCheck(f"lab {name!r} is not up (phase: {found.get('phase')})")
    source = topology or found.get("source")
    if expects is None:
        if not source or not os.path.exists(source):
            raise verify.CannotCheck(f"lab {name!r}: its topology file {source or '(not recorded)'} is not there; "
                                     "name the file: labkit verify TOPO --name LAB")
        expects = verify.load_expects(source)
    if not expects:
        raise verify.CannotCheck(f"lab {name!r}: {source or 'the checks given'} has no expect: entries to check")
    report = verify.run_checks(found, expects, timeout, retry=retry, refresh=lambda: status(name)[0])
    report.source = source
    return report


def verify_topology(path: str, name: str | None = None, timeout: float = verify.DEFAULT_TIMEOUT,
                    retry: int = 0) -> verify.Report:
    """`labkit verify TOPO`: the topology's checks against its running lab (`name` overrides its name)."""
    plan = load_plan(path, name=name)  # its expects are parsed once, with the plan (InputError: exit 2)
    return verify_lab(plan.lab, list(plan.expects), timeout, retry, topology=os.path.abspath(path))


def verify_labs(names: Sequence[str], topology: str | None = None, timeout: float = verify.DEFAULT_TIMEOUT,
                retry: int = 0) -> list[verify.Report]:
    """An instructor's view: each lab of `names` (globs such as `ws-*` match the labs that are up)
    against `topology`'s expectations, or each against the file it was brought up from. A lab that
    cannot be checked is a report with its reason (exit code 2), and the others still run."""
    import fnmatch
    from concurrent.futures import ThreadPoolExecutor

    known = sorted(known_labs())
    chosen: list[str] = []
    for pattern in names:
        matches = [n for n in known if fnmatch.fnmatchcase(n, pattern)] if set(pattern) & set("*?[") else [pattern]
        if not matches:
            raise verify.CannotCheck(f"no lab matches {pattern!r} (labs: {', '.join(known) or 'none'})")
        chosen.extend(m for m in matches if m not in chosen)
    expects = list(load_plan(topology).expects) if topology else None
    source = os.path.abspath(topology) if topology else None

    def one(lab_name: str) -> verify.Report:
        try:
            paths.check_lab_name(lab_name, "lab")
            return verify_lab(lab_name, expects, timeout, retry, topology=source)
        except LabkitError as exc:
            return verify.Report.cannot_check(lab_name, str(exc), source)

    with ThreadPoolExecutor(max_workers=min(4, max(1, len(chosen)))) as pool:
        return list(pool.map(one, chosen))


# ---------------------------------------------------------------- trace


def trace(lab: str, src: str, dst: str, protocol: str | None = None, timeout: float | None = None,
          family: int | None = None) -> dict[str, Any]:
    """`labkit trace`: one probe from `src` to `dst` in a running lab, and its path (labkit.trace);
    `family` 4 or 6 where `dst` has both."""
    from labkit import trace as tracing

    paths.check_lab_name(lab, "lab")
    found = status(lab)[0]
    if not found.get("nodes"):
        raise LabkitError(f"lab {lab!r} is not up: nothing to trace")
    with lab_lock(lab, "trace"):  # one trace at a time: they share the trace table's name
        return tracing.trace(found, src, dst, protocol, timeout=timeout or tracing.DEFAULT_TIMEOUT,
                             journal=paths.lab(lab).path("trace.json"), family=family)


def render_trace(report: dict[str, Any], fmt: str) -> str:
    """A trace report as text, json, mermaid, or html: drawn on the lab's picture (labkit graph)."""
    from labkit import graph
    from labkit import trace as tracing

    if fmt == "html":
        return graph.render_graph(status(report["lab"])[0], "html", trace=report)
    return tracing.render(report, fmt)


def validate(path: str) -> Plan:
    return load_plan(path)


# ---------------------------------------------------------------- leftovers


def leftovers(lab: str) -> list[str]:
    """Everything of `lab` that still exists, each as a short description; empty after a clean `down`:
    namespaces, /etc/netns files, the state folder, the host link, the Docker engine's containers
    labelled with the lab (when an engine answers), and processes whose command line names the lab's
    state folder (the DNS and CNI servers labkit starts are given paths in it). Found from what exists,
    never from the lab's state: `down`'s callers, the pytest plugin and the tests all use this one."""
    files = paths.lab(lab)
    prefix = netns_prefix(lab)
    found = [f"netns {n}" for n in netns.list_namespaces(prefix)]
    if os.path.isdir("/etc/netns"):
        found += [f"/etc/netns/{n}" for n in sorted(os.listdir("/etc/netns")) if n.startswith((prefix, f".{prefix}"))]
    if os.path.exists(files.dir):
        found.append(files.dir)
    if os.path.exists(f"/sys/class/net/{host_link_name(lab)}"):
        found.append(f"host link {host_link_name(lab)}")
    found += [f"host link {name}" for name in wiring.lab_host_links(lab)]
    if lab in _docker_engine_labs()[1]:
        found.append(f"docker containers labelled labkit.lab={lab}")
    if os.path.exists(paths.lock_path(lab)):  # the lab's lock file (labkit.lock), beside its folder
        found.append(paths.lock_path(lab))
    found += [f"process {pid}" for pid in processes.naming(files.dir)]
    return found
