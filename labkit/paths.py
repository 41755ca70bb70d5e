"""Every file and folder a lab has on the host, named in one place.

A lab's files live in its folder under the state root (`LABKIT_STATE_DIR`, default
/run/labkit: a tmpfs, like the namespaces they describe, so a reboot removes both).
Nothing else builds these paths. A lab name is checked with the rule topology
names follow before it becomes part of a path, and every path is checked to stay
inside the lab's folder: `--name /`, `--name ..` or a pod named `../x` never
becomes a path outside it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from labkit.errors import LabkitError
from labkit.topology.schema import LAB_NAME  # the rule topology names follow

DEFAULT_STATE_ROOT = "/run/labkit"
CNI_NETWORK = "labkit"  # the conflists' network name, and their file name


def state_root() -> str:
    """The folder holding every lab's folder (read from the environment at each call, so a test may set it)."""
    return os.path.abspath(os.environ.get("LABKIT_STATE_DIR") or DEFAULT_STATE_ROOT)


def is_lab_name(name: str) -> bool:
    return bool(LAB_NAME.match(name))


def check_lab_name(name: str) -> str:
    """`name` if it is a lab name (as a topology's `name:`), else one LabkitError saying what is valid."""
    if not isinstance(name, str) or not is_lab_name(name):
        raise LabkitError(f"{name!r} is not a lab name: use 1-12 lowercase letters, digits or '-', "
                          "starting and ending with a letter or digit")
    return name


def _inside(folder: str, *parts: str) -> str:
    """folder/parts..., refused if it would leave `folder` (an absolute part, '..', an empty name)."""
    if any(not part or part in (".", "..") or "/" in part or "\0" in part for part in parts):
        raise LabkitError(f"refusing a path outside {folder}: {'/'.join(parts)!r}")
    return os.path.join(folder, *parts)


@dataclass(frozen=True)
class LabPaths:
    """The paths of one lab. `root` overrides the state root (a runtime's tests use a temp folder)."""

    lab: str
    root: str

    @property
    def dir(self) -> str:
        return _inside(self.root, self.lab)

    @property
    def state_file(self) -> str:
        """What `up` recorded (status, exec, apply and down read it)."""
        return _inside(self.dir, "state.json")

    # --- the CNI plugin, its server and its address leases
    @property
    def cni_dir(self) -> str:
        return _inside(self.dir, "cni")

    @property
    def cni_socket(self) -> str:
        return _inside(self.cni_dir, "labkit-cni.sock")

    @property
    def cni_bin_dir(self) -> str:
        """The lab's CNI_PATH: the launcher for runtimes of one's own."""
        return _inside(self.cni_dir, "bin")

    @property
    def cni_server_pid(self) -> str:
        return _inside(self.cni_dir, "server.pid")

    @property
    def cni_server_log(self) -> str:
        return _inside(self.cni_dir, "server.log")

    def conflist_dir(self, node: str) -> str:
        return _inside(self.cni_dir, node)

    def conflist(self, node: str) -> str:
        return _inside(self.conflist_dir(node), f"10-{CNI_NETWORK}.conflist")

    def ipam_dir(self, node: str) -> str:
        """host-local style leases of one node's podCIDR, a file per address."""
        return _inside(self.dir, "ipam", node)

    # --- the cluster DNS
    @property
    def dns_dir(self) -> str:
        return _inside(self.dir, "dns")

    @property
    def dns_config(self) -> str:
        return _inside(self.dns_dir, "config.json")

    def dns_pid_file(self, pod: str) -> str:
        """The pid file of the DNS server serving kube-dns pod `pod`."""
        return _inside(self.dns_dir, f"{pod}.pid")

    # --- pods and nodes
    def pod_dir(self, namespace: str, pod: str) -> str:
        """A netns-runtime pod's own files: hosts, resolv.conf, its containers' logs."""
        return _inside(self.dir, "pods", f"{namespace}.{pod}")

    @property
    def docker_dir(self) -> str:
        """The docker runtime's bind-mounted /etc files."""
        return _inside(self.dir, "docker")


def lab(name: str, root: str | None = None) -> LabPaths:
    """The paths of lab `name`; LabkitError if `name` is not a lab name."""
    return LabPaths(check_lab_name(name), os.path.abspath(root) if root else state_root())


def lab_dir(name: str) -> str:
    return lab(name).dir


def lab_names() -> set[str]:
    """Labs that have a folder under the state root (anything else there is not a lab's)."""
    root = state_root()
    try:
        return {n for n in os.listdir(root) if is_lab_name(n) and os.path.isdir(os.path.join(root, n))}
    except FileNotFoundError:
        return set()
