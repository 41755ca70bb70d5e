"""The one orchestration pipeline: plan -> up / down / status / exec.

`up` is a list of phases run in order; if any fails, everything already built
is removed (by `down`, which works from what exists) and the cause is reported.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from labkit import cluster, state
from labkit.errors import LabkitError
from labkit.net import netns
from labkit.net.netlink import Batch, NetlinkError, link_indexes
from labkit.progress import Progress
from labkit.runtime import NodeSpec, Runtime, Sandbox
from labkit.topology import load_plan
from labkit.topology.plan import BRIDGE_IFNAME, NodePlan, Plan, netns_prefix

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
        ("host access", connect_host),
        ("pod network", cluster.setup_pod_network),
        ("pods", cluster.start_pods),
        ("services", cluster.apply_services),
        ("dns", cluster.start_dns),
        ("policies", cluster.apply_policies),
        ("exec", run_exec),
    ]
    for name, phase in phases:
        started = time.perf_counter()
        try:
            with progress.phase(name):
                phase(build)
            build.timings[name] = round(time.perf_counter() - started, 4)
        except BaseException as exc:
            progress.note(f"{name} failed; removing what was built")
            try:
                down(plan.lab, runtimes=(rt,))
            except LabkitError as undo_failure:  # report the cause, not the undo's own trouble
                progress.note(f"undo incomplete ({undo_failure}); run: labkit down --name {plan.lab}")
            if isinstance(exc, LabkitError):
                raise LabkitError(f"up failed at phase '{name}': {exc}") from exc
            if isinstance(exc, (OSError, NetlinkError)):
                raise LabkitError(f"up failed at phase '{name}': {exc}") from exc
            raise
    summary = summarize(plan, build)
    state.write(plan.lab, {**state.read(plan.lab), "phase": "up", "summary": summary})
    progress.note(f"lab {plan.lab} is up: {len(plan.nodes)} nodes, {len(plan.links)} links"
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


def _netns_path(b: Build, node: str) -> str:
    return b.sandboxes[node].netns_path


def create_links(b: Build) -> None:
    """Every veth pair, created with both ends in place, from one socket in the host."""
    plan = b.plan
    fds: dict[str, int] = {}
    try:
        for node, sandbox in b.sandboxes.items():
            fds[node] = os.open(sandbox.netns_path, os.O_RDONLY)
        batch = Batch()
        for link in plan.links:
            batch.veth(link.a.ifname, fds[link.a.node], link.b.ifname, fds[link.b.node], link.mtu,
                       what=f"create link {link.a.node}:{link.a.ifname} -- {link.b.node}:{link.b.ifname}")
        if plan.mgmt:
            fds["_mgmt"] = os.open(netns.netns_path(plan.mgmt.netns), os.O_RDONLY)
            for node in plan.nodes:
                if node.mgmt_ipv4:
                    batch.veth(node.name, fds["_mgmt"], "eth0", fds[node.name],
                               what=f"connect {node.name}:eth0 to the mgmt network")
        batch.send()
    finally:
        for fd in fds.values():
            os.close(fd)


def _configure_node(node: NodePlan) -> None:
    """Runs inside the node's namespace: bring everything up, then addresses, sysctls, routes."""
    if node.kind == "bridge":
        first = Batch()
        first.bridge(BRIDGE_IFNAME)
        first.send()
    indexes = link_indexes()
    batch = Batch()
    batch.link_up(indexes["lo"], "lo")
    master = indexes.get(BRIDGE_IFNAME) if node.kind == "bridge" else None
    for iface in node.interfaces:
        batch.link_up(indexes[iface.name], f"{node.name}:{iface.name}", master=master, mtu=iface.mtu)
        for address in iface.addresses:
            batch.address(indexes[iface.name], f"{node.name}:{iface.name}", str(address.ip),
                          address.network.prefixlen)
    batch.send()
    write_sysctls(node.sysctls, node.name)
    for route in node.routes:
        batch.route(route.dst, route.via, indexes[route.dev] if route.dev else None,
                    what=f"add route {route.dst} on {node.name}")
    batch.send()


def write_sysctls(sysctls: Sequence[tuple[str, str]], where: str) -> None:
    """Set sysctls of the calling thread's network namespace (net.* files are per namespace)."""
    for key, value in sysctls:
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(path, "w", encoding="ascii") as fh:
                fh.write(value)
        except OSError as exc:
            raise LabkitError(f"sysctl {key}={value} on {where}: {exc.strerror}") from None


def configure_nodes(b: Build) -> None:
    plan = b.plan
    by_path = {_netns_path(b, n.name): n for n in plan.nodes}
    netns.for_each_netns(list(by_path), lambda path: _configure_node(by_path[path]))
    if plan.mgmt:
        mgmt = plan.mgmt

        def bridge_ports() -> None:
            first = Batch()
            first.bridge(mgmt.bridge)
            first.send()
            indexes = link_indexes()
            batch = Batch()
            batch.link_up(indexes["lo"], "lo")
            for node in plan.nodes:
                if node.mgmt_ipv4:
                    batch.link_up(indexes[node.name], f"mgmt port of {node.name}", master=indexes[mgmt.bridge])
            batch.send()

        netns.run_in_netns(netns.netns_path(mgmt.netns), bridge_ports)


def connect_host(b: Build) -> None:
    """With `host-access: true`, a veth from the host into the mgmt bridge, holding the gateway address."""
    mgmt = b.plan.mgmt
    if not mgmt or not mgmt.host_access:
        return
    fd = os.open(netns.netns_path(mgmt.netns), os.O_RDONLY)
    host = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        batch = Batch()
        batch.veth(mgmt.host_ifname, host, "host", fd, what=f"create host link {mgmt.host_ifname}")
        batch.send()
    finally:
        os.close(fd)
        os.close(host)
    indexes = link_indexes()
    batch = Batch()
    batch.address(indexes[mgmt.host_ifname], mgmt.host_ifname, str(mgmt.gateway.ip), mgmt.subnet.prefixlen)
    batch.send()

    def enslave() -> None:
        idx = link_indexes()
        port = Batch()
        port.link_up(idx["host"], "mgmt port of the host", master=idx[mgmt.bridge])
        port.send()

    netns.run_in_netns(netns.netns_path(mgmt.netns), enslave)


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
        "timings": dict(build.timings) if build else {},
    }


# ---------------------------------------------------------------- down


def down(lab: str, runtimes: Sequence[Runtime] | None = None) -> bool:
    """Remove everything of `lab` that exists; True if there was anything. Idempotent."""
    existed = lab in known_labs()
    recorded = state.read(lab) or {}
    if runtimes is None:
        names = {"netns", recorded.get("runtime", "netns")}
        runtimes = [get_runtime(n) for n in sorted(names)]
    stop_recorded_processes(lab)
    for rt in runtimes:
        rt.destroy(lab)
    # the lab's own namespaces (mgmt, pods) whatever the node runtime
    from labkit.runtime.netns import NetnsRuntime

    NetnsRuntime().destroy(lab)
    _remove_host_link(lab)
    state.remove(lab)
    return existed


def stop_recorded_processes(lab: str) -> None:
    """Processes labkit started from the host into a sandbox (the DNS servers) leave pid files in
    the lab's state folder. A namespace scan finds them on the netns runtime; in a container's
    namespace only the pid file does, and the container's removal would not stop them."""
    from labkit.runtime.netns import stop_pids

    pids = []
    for folder, _, files in os.walk(state.lab_dir(lab)):
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

    name = host_link_name(lab)
    if os.path.exists(f"/sys/class/net/{name}"):
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=name):
                ipr.link("del", index=index)


def known_labs() -> set[str]:
    from labkit.runtime.netns import NetnsRuntime

    return state.labs() | NetnsRuntime().labs()


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
