"""The embedded runtime: every node is a named network namespace; no daemon needed.

Names carry the lab's prefix (`lk-<lab>.`), so teardown finds everything from
what exists: the namespaces under /run/netns, the processes living in them,
and the per-namespace files under /etc/netns.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from collections.abc import Sequence

from labkit import paths, processes
from labkit.errors import LabkitError
from labkit.files import makedirs, write_atomic, write_file
from labkit.net import netns
from labkit.runtime import podproc
from labkit.runtime.base import NodeSpec, PodSpec, RuntimeBase, Sandbox
from labkit.topology.plan import netns_prefix

ETC_NETNS = "/etc/netns"
EXIT_SUFFIX = podproc.EXIT_SUFFIX


def _write_etc(lab: str, nodes: Sequence[NodeSpec]) -> None:
    """/etc/netns/<ns>/ files replace /etc/* for `ip netns exec`, as iproute2 documents.

    Nodes usually share one hosts file (it names every node): it is written once,
    as /etc/netns/.<prefix>hosts, and hard-linked into each node's folder, so a
    thousand-node lab writes one file, not a thousand copies of a thousand lines.
    """
    shared: dict[str, str] = {}
    for node in nodes:
        folder = os.path.join(ETC_NETNS, node.netns)
        for name, text in (("hosts", node.hosts), ("resolv.conf", node.resolv_conf)):
            if not text:
                continue
            makedirs(folder)
            key = f"{name}:{text}"
            if key not in shared:
                shared[key] = os.path.join(ETC_NETNS, f".{netns_prefix(lab)}{len(shared)}.{name}")
                write_atomic(shared[key], text)  # 0644 whatever the umask: every process of the node reads it
            os.link(shared[key], os.path.join(folder, name))


class NetnsRuntime(RuntimeBase):
    name = "netns"

    def __init__(self) -> None:
        self._stand_ins = podproc.StandInLaunchers()

    def finish_pods(self, lab: str) -> None:
        self._stand_ins.close(lab)

    def create_nodes(self, lab: str, nodes: Sequence[NodeSpec]) -> list[Sandbox]:
        try:
            netns.create_namespaces(n.netns for n in nodes)
        except FileExistsError as exc:
            raise LabkitError(f"network namespace {exc.filename} already exists: "
                              f"is lab {lab!r} already up? (labkit down --name {lab})") from None
        _write_etc(lab, nodes)
        return [Sandbox(lab, n.name, netns.netns_path(n.netns), labels={"kind": n.kind}) for n in nodes]

    def create_node(self, lab: str, node: NodeSpec) -> Sandbox:
        return self.create_nodes(lab, [node])[0]

    def create_pod(self, lab: str, pod: PodSpec) -> Sandbox:
        """The pod's network namespace (its node's, for hostNetwork); holder and containers start once it is wired."""
        if pod.host_netns:
            return Sandbox(lab, f"{pod.namespace}/{pod.name}", netns.netns_path(pod.host_netns),
                           labels={"node": pod.node, "host-network": "true"})
        try:
            netns.create_namespaces([pod.netns])
        except FileExistsError:
            raise LabkitError(f"network namespace {pod.netns} already exists") from None
        return Sandbox(lab, f"{pod.namespace}/{pod.name}", netns.netns_path(pod.netns),
                       labels={"node": pod.node})

    def start_containers(self, lab: str, pod: PodSpec, sandbox: Sandbox) -> Sandbox:
        """Holder first (own hostname, hosts, resolv.conf), then each container's command in it."""
        folder = paths.lab(lab).pod_dir(pod.namespace, pod.name)
        makedirs(folder)
        binds = {}
        for name, text in (("hosts", pod.hosts), ("resolv.conf", pod.resolv_conf)):
            if not text:  # the node's own (hostNetwork, dnsPolicy Default)
                continue
            path = os.path.join(folder, name)
            write_file(path, text)  # 0644, root's to write: the pod reads it as its /etc/{hosts,resolv.conf}
            binds[f"/etc/{name}"] = path
        holder = podproc.spawn_holder(sandbox.netns_path, binds, pod.hostname, os.path.join(folder, "holder.log"))
        podproc.record_exec_capabilities(folder, pod.containers[0].capabilities if pod.containers
                                         else podproc.DEFAULT_CAPABILITIES)
        for container in pod.containers:
            if container.stand_in is not None:
                self._stand_ins.start(lab, net=sandbox.netns_path, uts=f"/proc/{holder}/ns/uts",
                                      namespace=pod.namespace, pod=pod.name, container=container)
            elif container.argv:
                argv = container.argv
                if pod.run_once:  # the exit code outlives the process: status reads it (pod_exit_codes)
                    podproc.check_program(argv)
                    argv = podproc.recording_exit(argv, os.path.join(folder, f"{container.name}{EXIT_SUFFIX}"))
                podproc.spawn_in_pod(holder, argv, container.env,
                                     os.path.join(folder, f"{container.name}.log"), container.capabilities)
        return dataclasses.replace(sandbox, pid=holder)

    def exit_codes(self, lab: str, pod: str) -> list[int | None]:
        """Each started container's exit code (None while it runs), for pods that run once."""
        return podproc.exit_codes(paths.lab(lab).pod_dir(*pod.split("/", 1)))

    def remove_pod(self, lab: str, sandbox: Sandbox) -> None:
        """Stop the pod's processes, remove its namespace and files. Idempotent."""
        if sandbox.labels.get("host-network"):  # the node's namespace stays; only the pod's processes go
            processes.stop(podproc.pod_processes(sandbox.pid) if sandbox.pid else [])
            shutil.rmtree(paths.lab(lab).pod_dir(*sandbox.name.split("/", 1)), ignore_errors=True)
            return
        processes.stop_in_namespaces([sandbox.netns_path])
        netns.delete_namespace(os.path.basename(sandbox.netns_path))
        shutil.rmtree(paths.lab(lab).pod_dir(*sandbox.name.split("/", 1)), ignore_errors=True)

    def _argv(self, sandbox: Sandbox, argv: Sequence[str]) -> list[str]:
        if sandbox.pid:  # a pod: its holder's mount, UTS and network namespaces, and a pod's capabilities
            folder = paths.lab(sandbox.lab).pod_dir(*sandbox.name.split("/", 1))
            return podproc.nsenter_argv(sandbox.pid, argv, podproc.exec_capabilities(folder))
        return ["ip", "netns", "exec", os.path.basename(sandbox.netns_path), *argv]

    def exec(self, sandbox: Sandbox, argv: Sequence[str], *, capture: bool = False) -> tuple[int, str]:
        try:
            proc = subprocess.run(self._argv(sandbox, argv), capture_output=capture, text=True, check=False)
        except FileNotFoundError as exc:
            raise LabkitError(f"cannot run {argv[0]!r}: {exc.strerror}") from None
        return proc.returncode, (proc.stdout + proc.stderr) if capture else ""

    def destroy(self, lab: str) -> None:
        names = netns.list_namespaces(netns_prefix(lab))
        processes.stop_in_namespaces([netns.netns_path(n) for n in names])
        for name in names:
            netns.delete_namespace(name)
            shutil.rmtree(os.path.join(ETC_NETNS, name), ignore_errors=True)
        if os.path.isdir(ETC_NETNS):  # shared files, and files of namespaces that never got made
            for name in os.listdir(ETC_NETNS):
                if name.startswith((netns_prefix(lab), f".{netns_prefix(lab)}")):
                    path = os.path.join(ETC_NETNS, name)
                    if os.path.isdir(path):
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        os.unlink(path)

    def labs(self) -> set[str]:
        return {n[3:].split(".", 1)[0] for n in netns.list_namespaces("lk-") if "." in n}

