"""The one orchestration pipeline: plan -> up / down / status / exec.

`up` is a list of phases run in order; if any fails, everything already built
is removed (by `down`, which works from what exists) and the cause is reported.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from labkit import cluster, state
from labkit.errors import LabkitError
from labkit.net import netns, wiring
from labkit.progress import Progress
from labkit.runtime import NodeSpec, Runtime, Sandbox
from labkit.topology import load_plan
from labkit.topology.plan import Plan, netns_prefix

# ---------------------------------------------------------------- runtimes


def get_runtime(name: str) -> Runtime:
    """The runtime registry: netns is built in; docker is imported only when asked for."""
    if name == "netns":
        from labkit.runtime.netns import NetnsRuntime

        return NetnsRuntime()
    if name == "docker":
        from labkit.runtime.docker import DockerRuntime

        return DockerRuntime()
    raise LabkitError(f"unknown runtime {name!r}; valid: netns, docker")


# ---------------------------------------------------------------- up


class Build:
    """What `up` has made so far; the phases fill it in."""

    def __init__(self, plan: Plan, runtime: Runtime, progress: Progress):
        self.plan = plan
        self.runtime = runtime
        self.progress = progress
        self.sandboxes: dict[str, Sandbox] = {}
        self.pods: list[cluster.PodRecord] = []
        self.timings: dict[str, float] = {}
        self.services: list = []
        self.previous_services: list | None = None  # set by `apply`: the views applied before


def up(path: str, runtime: str | None = None, progress: Progress | None = None,
       name: str | None = None) -> dict[str, Any]:
    """Build the lab in `path` (named `name` if given); on any failure remove everything built and raise."""
    progress = progress or Progress()
    plan = load_plan(path, runtime, name)
    rt = get_runtime(plan.runtime)
    if plan.lab in known_labs():
        raise LabkitError(f"lab {plan.lab!r} is already up; take it down first: labkit down --name {plan.lab}")
    build = Build(plan, rt, progress)
    state.write(plan.lab, {"name": plan.lab, "runtime": plan.runtime, "source": os.path.abspath(path),
                           "phase": "starting", "created": time.time()})
    phases: list[tuple[str, Callable[[Build], None]]] = [
        ("nodes", create_nodes),
        ("links", create_links),
        ("addresses and routes", configure_nodes),
    ]
    if plan.mgmt and plan.mgmt.host_access:
        phases.append(("host access", connect_host))
    if plan.cluster:
        phases += [
            ("pod network", cluster.setup_pod_network),
            ("pods", cluster.start_pods),
            ("services", cluster.apply_services),
            ("dns", cluster.start_dns),
            ("policies", cluster.apply_policies),
        ]
    phases.append(("exec", run_exec))
    if plan.cluster:
        phases += [("cni server", cluster.wait_cni_server), ("readiness", cluster.wait_ready)]
    _run_phases(build, phases, undo=True)
    return _record(build)


def apply(path: str, name: str | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Bring a running lab's workloads in line with its file: new pods start, removed ones stop,
    services, DNS and policies are re-applied. Nodes and links must be as they were at `up`."""
    progress = progress or Progress()
    plan = load_plan(path, None, name)
    recorded = state.read(plan.lab) or {}
    summary = recorded.get("summary")
    if summary is None:
        raise LabkitError(f"lab {plan.lab!r} is not up: labkit up {path}")
    plan = dataclasses.replace(plan, runtime=summary["runtime"])
    if plan.cluster is None:
        raise LabkitError(f"lab {plan.lab!r} has no cluster: apply changes workloads only")
    if _shape(summarize(plan)) != _shape(summary):
        raise LabkitError(f"the nodes or links of {path} changed since lab {plan.lab!r} came up; "
                          f"rebuild it: labkit up --reconfigure {path}")
    build = Build(plan, get_runtime(plan.runtime), progress)
    build.sandboxes = {n["name"]: Sandbox(plan.lab, n["name"], n["netns_path"]) for n in summary["nodes"]}
    build.pods = [cluster.PodRecord(p["namespace"], p["name"], p["node"], p["ip"], p["netns"], p["netns_path"],
                                    p["pid"], p["labels"]) for p in summary["pods"]]
    from labkit.proxy import ServiceView

    build.previous_services = [ServiceView.model_validate(v) for v in recorded.get("service_views", [])]
    phases: list[tuple[str, Callable[[Build], None]]] = [
        ("cni server", cluster.ensure_cni_server),
        ("pods", cluster.sync_pods),
        ("services", cluster.apply_services),
        ("dns", cluster.start_dns),
        ("policies", cluster.apply_policies),
        ("readiness", cluster.wait_ready),
    ]
    try:
        _run_phases(build, phases, undo=False)
    finally:  # what did change is recorded, so status, exec and down see the lab as it is
        _record(build)
    return summarize(plan, build)


def _shape(summary: dict[str, Any]) -> list:
    """What `apply` may not change: nodes (name, kind, interfaces) and links."""
    return [[(n["name"], n["kind"], [(i["name"], i["ipv4"]) for i in n["interfaces"]]) for n in summary["nodes"]],
            [(link["a"], link["b"]) for link in summary["links"]]]


def _run_phases(build: Build, phases: list[tuple[str, Callable[[Build], None]]], *, undo: bool) -> None:
    """Run phases in order, timing each; on failure undo the lab (up) or stop where it is (apply)."""
    plan, progress = build.plan, build.progress
    for phase_name, phase in phases:
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


def _hosts_file(plan: Plan) -> str:
    lines = ["127.0.0.1\tlocalhost"]
    for node in plan.nodes:
        addresses = [node.mgmt_ipv4] if node.mgmt_ipv4 else [a for i in node.interfaces for a in i.addresses]
        if addresses:
            lines.append(f"{addresses[0].ip}\t{node.name}")
    return "\n".join(lines) + "\n"


def _resolv_conf(plan: Plan) -> str:
    """Nodes resolve each other from their hosts file; with no DNS server in the lab, fail fast, not in 5 s."""
    if plan.cluster:
        return f"nameserver {plan.cluster.dns_ip}\nsearch {plan.cluster.domain}\noptions timeout:1 attempts:2\n"
    return f"# lab {plan.lab}: names come from /etc/hosts; there is no DNS server\noptions timeout:1 attempts:1\n"


def create_nodes(b: Build) -> None:
    plan = b.plan
    hosts, resolv_conf = _hosts_file(plan), _resolv_conf(plan)
    specs = [NodeSpec(name=n.name, kind=n.kind, netns=n.netns, image=n.image, hostname=n.name, hosts=hosts,
                      resolv_conf=resolv_conf) for n in plan.nodes]
    if plan.mgmt:
        netns.create_namespaces([plan.mgmt.netns])
    create_many = getattr(b.runtime, "create_nodes", None)
    sandboxes = create_many(plan.lab, specs) if create_many else [b.runtime.create_node(plan.lab, s) for s in specs]
    b.sandboxes = {s.name: s for s in sandboxes}


def create_links(b: Build) -> None:
    wiring.create_links(b.plan, _netns_paths(b))


def configure_nodes(b: Build) -> None:
    wiring.configure_nodes(b.plan, _netns_paths(b))


def connect_host(b: Build) -> None:
    assert b.plan.mgmt is not None
    wiring.connect_host(b.plan.mgmt)


def _netns_paths(b: Build) -> dict[str, str]:
    return {name: sandbox.netns_path for name, sandbox in b.sandboxes.items()}


def run_exec(b: Build) -> None:
    for node in b.plan.nodes:
        for argv in node.exec:
            code, output = b.runtime.exec(b.sandboxes[node.name], argv, capture=True)
            if code != 0:
                raise LabkitError(f"node {node.name}: exec {' '.join(argv)!r} exited with {code}: {output.strip()}")


def summarize(plan: Plan, build: Build | None = None) -> dict[str, Any]:
    """What status reports about a lab (the JSON keys of DESIGN.md section 4)."""
    nodes = []
    for node in plan.nodes:
        nodes.append({
            "name": node.name, "kind": node.kind, "netns": node.netns,
            "netns_path": build.sandboxes[node.name].netns_path if build else None,
            "mgmt_ipv4": str(node.mgmt_ipv4.ip) if node.mgmt_ipv4 else None,
            "pod_cidr": str(node.pod_cidr) if node.pod_cidr else None,
            "interfaces": [{"name": i.name, "ipv4": [str(a) for a in i.addresses],
                            "peer": f"{i.peer_node}:{i.peer_ifname}" if i.peer_node else None}
                           for i in node.interfaces],
        })
    return {
        "name": plan.lab, "runtime": plan.runtime, "source": plan.source, "nodes": nodes,
        "links": [{"a": f"{link.a.node}:{link.a.ifname}", "b": f"{link.b.node}:{link.b.ifname}"}
                  for link in plan.links],
        "mgmt": {"netns": plan.mgmt.netns, "subnet": str(plan.mgmt.subnet),
                 "host_access": plan.mgmt.host_access} if plan.mgmt else None,
        "pods": [p.as_status() for p in build.pods] if build else [],
        "services": [s.as_status() for s in build.services] if build else [],
        "dns": {"ip": str(plan.cluster.dns_ip), "domain": plan.cluster.domain} if plan.cluster else None,
        "cni": {"bin_dir": cluster.cni_bin_dir(plan.lab), "socket": cluster.cni_socket(plan.lab),
                "conflists": {n.name: cluster.conflist_path(plan.lab, n.name) for n in cluster.k8s_nodes(plan)}}
        if plan.cluster else None,
        "timings": dict(build.timings) if build else {},
    }


# ---------------------------------------------------------------- down


def down(lab: str, runtimes: Sequence[Runtime] | None = None) -> bool:
    """Remove everything of `lab` that exists; True if there was anything. Idempotent."""
    existed = lab in known_labs()
    recorded = state.read(lab) or {}
    if runtimes is None and recorded.get("runtime"):
        runtimes = [get_runtime(recorded["runtime"])]
    elif runtimes is None:  # no state (deleted, or a crash before it was written): ask the engine too
        docker, docker_labs = _docker_engine_labs()
        runtimes = [get_runtime("netns"), *([docker] if docker else [])]
        existed = existed or lab in docker_labs
    stop_recorded_processes(lab)
    for rt in runtimes:
        if rt.name != "netns":
            rt.destroy(lab)
    # Last, and whatever the node runtime: the lab's own namespaces (mgmt, netns nodes and pods).
    from labkit.runtime.netns import NetnsRuntime

    NetnsRuntime().destroy(lab)
    _remove_host_link(lab)
    state.remove(lab)
    return existed


def leftovers(lab: str) -> list[str]:
    """Everything of `lab` that still exists, each as a short description; empty after a clean `down`:
    namespaces, /etc/netns folders, the state folder, the host link, the Docker engine's containers
    labelled with the lab (when an engine answers), and processes whose command line names the lab's
    state folder (the DNS and CNI servers labkit starts are given paths in it)."""
    from labkit.topology.plan import host_link_name

    prefix = netns_prefix(lab)
    found = [f"netns {n}" for n in netns.list_namespaces(prefix)]
    if os.path.isdir("/etc/netns"):
        found += [f"/etc/netns/{n}" for n in sorted(os.listdir("/etc/netns")) if n.startswith((prefix, f".{prefix}"))]
    folder = state.lab_dir(lab)
    if os.path.exists(folder):
        found.append(folder)
    if os.path.exists(f"/sys/class/net/{host_link_name(lab)}"):
        found.append(f"host link {host_link_name(lab)}")
    if lab in _docker_engine_labs()[1]:
        found.append(f"docker containers labelled labkit.lab={lab}")
    needle = (folder.rstrip("/") + "/").encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if needle in fh.read():
                        found.append(f"process {entry}")
            except OSError:
                continue
    return found


def stop_recorded_processes(lab: str, only: str | None = None) -> None:
    """Processes labkit started from the host (the DNS servers, the CNI server) leave pid files in
    the lab's state folder (or `only` one folder of it). A namespace scan finds those in a lab's
    namespace on the netns runtime; in a container's namespace, or on the host, only the pid file does."""
    from labkit.runtime.netns import stop_pids

    pids = []
    for folder, _, files in os.walk(only or state.lab_dir(lab)):
        for name in files:
            if not name.endswith(".pid"):
                continue
            try:
                with open(os.path.join(folder, name), encoding="ascii") as fh:
                    pid = int(fh.read().strip())
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    if b"labkit" in fh.read():  # still ours, not a reused pid
                        pids.append(pid)
            except (OSError, ValueError):
                continue
    stop_pids(pids)


def _remove_host_link(lab: str) -> None:
    from labkit.topology.plan import host_link_name

    wiring.remove_host_link(host_link_name(lab))


def known_labs(*, containers: bool = False) -> set[str]:
    """Labs by state folder and namespaces; with `containers`, also by the labels of the Docker
    engine's containers (when an engine is there: a docker lab whose state was deleted)."""
    from labkit.runtime.netns import NetnsRuntime

    found = state.labs() | NetnsRuntime().labs()
    if containers:
        found |= _docker_engine_labs()[1]
    return found


def _docker_engine_labs() -> tuple[Runtime | None, set[str]]:
    """The docker runtime and the labs its engine's containers belong to (one listing); (None, empty)
    when no engine answers: a machine without Docker has no docker labs."""
    from labkit.runtime.docker import engine_url

    url = engine_url()
    if url.startswith("unix://") and not os.path.exists(url[len("unix://"):]):
        return None, set()
    rt = get_runtime("docker")
    try:
        return rt, rt.labs()
    except LabkitError:
        return None, set()


# ---------------------------------------------------------------- status / exec


def status(lab: str | None = None) -> list[dict[str, Any]]:
    names = [lab] if lab else sorted(known_labs())
    result = []
    for name in names:
        recorded = state.read(name)
        if recorded is None and name not in known_labs():
            raise LabkitError(f"no lab named {name!r} is up (labs: {', '.join(sorted(known_labs())) or 'none'})")
        summary = (recorded or {}).get("summary") or {"name": name, "nodes": [], "pods": [], "services": [],
                                                      "dns": None, "runtime": (recorded or {}).get("runtime")}
        present = set(netns.list_namespaces(netns_prefix(name)))
        for node in summary.get("nodes", []):
            node["running"] = node["netns"] in present if summary.get("runtime") == "netns" else None
        summary["phase"] = (recorded or {}).get("phase", "unknown (no state file)")
        result.append(summary)
    return result


def sandbox_of(lab: str, target: str) -> tuple[Runtime, Sandbox]:
    recorded = state.read(lab)
    if recorded is None or "summary" not in recorded:
        raise LabkitError(f"no lab named {lab!r} is up (labs: {', '.join(sorted(known_labs())) or 'none'})")
    summary = recorded["summary"]
    rt = get_runtime(summary["runtime"])
    if "/" in target:
        pod = next((p for p in summary["pods"] if f"{p['namespace']}/{p['name']}" == target), None)
        if pod is None:
            names = ", ".join(f"{p['namespace']}/{p['name']}" for p in summary["pods"]) or "none"
            raise LabkitError(f"lab {lab!r} has no pod {target!r} (pods: {names})")
        return rt, Sandbox(lab, target, pod["netns_path"], pid=pod["pid"])
    node = next((n for n in summary["nodes"] if n["name"] == target), None)
    if node is None:
        names = ", ".join(n["name"] for n in summary["nodes"])
        raise LabkitError(f"lab {lab!r} has no node {target!r} (nodes: {names})")
    return rt, Sandbox(lab, target, node["netns_path"] or netns.netns_path(node["netns"]))


def exec_in(lab: str, target: str, argv: Sequence[str]) -> int:
    """Run argv in a node of a running lab; its exit code passes through."""
    rt, sandbox = sandbox_of(lab, target)
    code, _ = rt.exec(sandbox, argv)
    return code


def validate(path: str) -> Plan:
    return load_plan(path)
