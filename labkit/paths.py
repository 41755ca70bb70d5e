"""The one place that names a lab's files and folders, and checks the lab names they are built from.

A lab name reaches labkit from a topology file, the command line (`--name`),
the environment or a state file; each is checked here, by the rule topology
names follow, before it becomes part of a path or a namespace prefix. A name
that is not a lab name never reaches `rmtree` (`--name /`, `--name .`) or a
prefix match (`--name LAB.default` would match the pods of lab LAB).
"""

from __future__ import annotations

import os

from labkit.errors import InputError
from labkit.topology.schema import LAB_NAME

DEFAULT_STATE_ROOT = "/run/labkit"

# Folders: readable by all (status, graph), writable by root only. Files other programs read
# (configs, hosts, resolv.conf, pid files): 0644. Sockets are made owner-only by their servers.
DIR_MODE = 0o755
FILE_MODE = 0o644
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
