"""The one place that names a lab's files and folders, and checks the lab names they are built from.

A lab's files live in its folder under the state root (`LABKIT_STATE_DIR`, default
/run/labkit: a tmpfs, like the namespaces they describe, so a reboot removes both).
Nothing else builds these paths: `lab(name)` gives every one of them (LabPaths).

A lab name reaches labkit from a topology file, the command line (`--name`),
the environment or a state file; each is checked here, by the rule topology
names follow, before it becomes part of a path or a namespace prefix. A name
that is not a lab name never reaches `rmtree` (`--name /`, `--name .`) or a
prefix match (`--name LAB.default` would match the pods of lab LAB). Names of
nodes and pods inside a path are single path components, and every path is
checked to stay inside the lab's folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from labkit.errors import InputError
from labkit.topology.schema import LAB_NAME  # the rule topology names follow

DEFAULT_STATE_ROOT = "/run/labkit"
CNI_NETWORK = "labkit"  # the conflists' network name, and their file name

LAB_NAME_RULE = "1-12 lowercase letters, digits or '-', starting and ending with a letter or digit"


def is_lab_name(name: object) -> bool:
    return isinstance(name, str) and LAB_NAME.fullmatch(name) is not None


def check_lab_name(name: object, where: str = "--name") -> str:
    """`name` if it is a lab name; otherwise one clear error naming where it came from."""
    if not is_lab_name(name):
        raise InputError(f"{where}: {name!r} is not a lab name: use {LAB_NAME_RULE}")
    assert isinstance(name, str)
    return name


def state_root() -> str:
    """The folder holding every lab's folder (read from the environment at each call, so a test may set it).
    LABKIT_STATE_DIR must be an absolute path below / (with `/`, lab `etc` would be the folder /etc)."""
    root = os.environ.get("LABKIT_STATE_DIR") or DEFAULT_STATE_ROOT
    if not os.path.isabs(root) or not os.path.normpath(root).strip("/"):
        raise InputError(f"LABKIT_STATE_DIR={root!r}: give an absolute path to a folder of labkit's own, "
                         f"such as {DEFAULT_STATE_ROOT}")
    return os.path.normpath(root)


def lab_dir(lab: str) -> str:
    """The lab's state folder: <state root>/<lab>, for a valid lab name only."""
    return inside(state_root(), check_lab_name(lab, "lab name"))


def lab_path(lab: str, *parts: str) -> str:
    """A path inside the lab's state folder; refuses one that would leave it."""
    return inside(lab_dir(lab), *parts)


def lock_path(lab: str) -> str:
    """The lab's lock file: beside its state folder, so `down` may remove the folder while holding it."""
    return inside(state_root(), f".{check_lab_name(lab, 'lab name')}.lock")


def inside(root: str, *parts: str) -> str:
    """os.path.join(root, *parts), refused if the result is not strictly inside `root`."""
    base = os.path.abspath(root)
    path = os.path.abspath(os.path.join(base, *parts))
    if os.path.commonpath([base, path]) != base or path == base:
        raise InputError(f"{os.path.join(*parts) if parts else ''!r} is not inside {base}")
    return path


def _component(name: str) -> str:
    """A node's, pod's or namespace's name as one path component: never empty, '.', '..', or with '/'."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise InputError(f"{name!r} cannot name a file or folder of a lab")
    return name


@dataclass(frozen=True)
class LabPaths:
    """Every path of one lab. `root` is the state root (a runtime's own tests use a temp folder)."""

    lab: str
    root: str

    @property
    def dir(self) -> str:
        return inside(self.root, self.lab)

    def path(self, *parts: str) -> str:
        return inside(self.dir, *parts)

    @property
    def state_file(self) -> str:
        """What `up` recorded (status, exec, apply and down read it)."""
        return self.path("state.json")

    # --- the CNI plugin, its server and its address leases
    @property
    def cni_dir(self) -> str:
        return self.path("cni")

    @property
    def cni_socket(self) -> str:
        return self.path("cni", "labkit-cni.sock")

    @property
    def cni_bin_dir(self) -> str:
        """The lab's CNI_PATH: the launcher for runtimes of one's own."""
        return self.path("cni", "bin")

    @property
    def cni_server_pid(self) -> str:
        return self.path("cni", "server.pid")

    @property
    def cni_server_log(self) -> str:
        return self.path("cni", "server.log")

    def conflist_dir(self, node: str) -> str:
        return self.path("cni", _component(node))

    def conflist(self, node: str) -> str:
        return self.path("cni", _component(node), f"10-{CNI_NETWORK}.conflist")

    def ipam_dir(self, node: str) -> str:
        """host-local style leases of one node's podCIDR, a file per address."""
        return self.path("ipam", _component(node))

    # --- pods' extra networks (NetworkAttachmentDefinitions, labkit.cni.attach)
    @property
    def multus_pods_dir(self) -> str:
        return self.path("multus", "pods")

    def multus_record(self, namespace: str, pod: str) -> str:
        """What a pod's attachments were made with: DEL reads it back."""
        return self.path("multus", "pods", f"{_component(namespace)}.{_component(pod)}.json")

    def multus_ipam_dir(self, node: str) -> str:
        """host-local's dataDir for attachments on `node` (each node keeps its own leases)."""
        return self.path("multus", "ipam", _component(node))

    # --- the cluster DNS
    @property
    def dns_dir(self) -> str:
        return self.path("dns")

    @property
    def dns_config(self) -> str:
        return self.path("dns", "config.json")

    def dns_pid_file(self, pod: str) -> str:
        """The pid file of the DNS server serving kube-dns pod `pod`."""
        return self.path("dns", f"{_component(pod)}.pid")

    # --- BGP daemons (backend bgp): one BIRD per k8s-node, and per router node peering with them
    @property
    def bgp_dir(self) -> str:
        return self.path("bgp")

    def bird_dir(self, node: str) -> str:
        """A node's BIRD: bird.conf, bird.ctl (its control socket, for birdc -s), bird.pid, bird.log."""
        return self.path("bgp", _component(node))

    def bird_socket(self, node: str) -> str:
        return self.path("bgp", _component(node), "bird.ctl")

    # --- LoadBalancer L2 speakers (labkit.lb): one per k8s-node
    @property
    def lb_dir(self) -> str:
        return self.path("lb")

    def lb_config(self, node: str) -> str:
        """What the node's speaker answers ARP for, and whom it defers to (rewritten by `apply`)."""
        return self.path("lb", f"{_component(node)}.json")

    def lb_pid_file(self, node: str) -> str:
        """The speaker's pid file: the other speakers read it to know it runs."""
        return self.path("lb", f"{_component(node)}.pid")

    def lb_announcing(self, node: str) -> str:
        """The addresses the node's speaker answers for now, written by the speaker on every change."""
        return self.path("lb", f"{_component(node)}.announcing")

    # --- pods and containers
    @property
    def pods_dir(self) -> str:
        return self.path("pods")

    def pod_dir(self, namespace: str, pod: str) -> str:
        """A netns-runtime pod's own files: hosts, resolv.conf, its containers' logs."""
        return self.path("pods", f"{_component(namespace)}.{_component(pod)}")

    @property
    def docker_dir(self) -> str:
        """The docker runtime's bind-mounted /etc files."""
        return self.path("docker")


def lab(name: str, root: str | None = None) -> LabPaths:
    """The paths of lab `name` (InputError if `name` is not a lab name)."""
    return LabPaths(check_lab_name(name, "lab name"), os.path.abspath(root) if root else state_root())


def lab_names() -> set[str]:
    """Labs that have a folder under the state root (folders whose names are not lab names are not labkit's)."""
    root = state_root()
    try:
        return {n for n in os.listdir(root) if is_lab_name(n) and os.path.isdir(os.path.join(root, n))}
    except FileNotFoundError:
        return set()
