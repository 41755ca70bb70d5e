"""Named network namespaces, made and entered from inside this process.

`ip netns add` and pyroute2's netns helpers fork a process per namespace; a lab
of a thousand nodes cannot pay that. Here a worker thread unshares and
bind-mounts each namespace itself (the same steps as iproute2), and work that
must happen *inside* a namespace runs on a thread that setns()ed into it:
setns(CLONE_NEWNET) changes only the calling thread, and a socket stays bound
to the namespace it was created in.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Callable, Iterable
from typing import TypeVar

from labkit.net.netlink import setns
from labkit.net.syscalls import CLONE_NEWNET, MNT_DETACH, MS_BIND, MS_REC, MS_SHARED, check, libc

NETNS_RUN_DIR = "/run/netns"
T = TypeVar("T")


def netns_path(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def _prepare_run_dir() -> None:
    """Make /run/netns a shared mount point, as `ip netns add` does, so both tools agree."""
    os.makedirs(NETNS_RUN_DIR, exist_ok=True)
    if libc.mount(b"", NETNS_RUN_DIR.encode(), b"none", MS_SHARED | MS_REC, None) == 0:
        return
    check(libc.mount(NETNS_RUN_DIR.encode(), NETNS_RUN_DIR.encode(), b"none", MS_BIND | MS_REC, None),
           "bind-mount /run/netns")
    check(libc.mount(b"", NETNS_RUN_DIR.encode(), b"none", MS_SHARED | MS_REC, None), "share /run/netns")


def _enter(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd)
    except OSError as exc:
        raise OSError(exc.errno, f"enter network namespace {path}: {os.strerror(exc.errno)}") from None
    finally:
        os.close(fd)


def _run_thread(work: Callable[[], T]) -> T:
    """Run work() on a fresh thread, so namespace switches never touch the caller's thread."""
    result: list = []
    failure: list[BaseException] = []

    def wrapped() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=wrapped)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def run_in_netns(path: str | None, fn: Callable[[], T]) -> T:
    """Call fn() on a thread that lives in the network namespace at `path` (None: this one)."""
    if path is None:
        return fn()

    def work() -> T:
        _enter(path)
        return fn()

    return _run_thread(work)


def for_each_netns(paths: Iterable[str], fn: Callable[[str], None]) -> None:
    """Call fn(path) inside each namespace in turn, from one thread (cheaper than a thread each)."""

    def work() -> None:
        for path in paths:
            _enter(path)
            fn(path)

    _run_thread(work)


def create_namespaces(names: Iterable[str]) -> list[str]:
    """Create named namespaces (like `ip netns add`); returns those made, in order.

    On failure the ones already made are kept, and reported through the exception's
    `created` attribute, so the caller's undo can remove them.
    """
    _prepare_run_dir()
    created: list[str] = []

    def work() -> None:
        for name in names:
            path = netns_path(name)
            os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
            try:
                check(libc.unshare(CLONE_NEWNET), f"create network namespace {name}")
                check(libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None),
                       f"bind network namespace {name}")
            except OSError:
                os.unlink(path)
                raise
            created.append(name)

    try:
        _run_thread(work)
    except OSError as exc:
        exc.created = list(created)  # type: ignore[attr-defined]
        raise
    return created


def delete_namespace(name: str) -> bool:
    """Remove a named namespace (like `ip netns del`); False if it did not exist."""
    path = netns_path(name)
    if not os.path.exists(path):
        return False
    if libc.umount2(path.encode(), MNT_DETACH) != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
        err = ctypes.get_errno()
        raise OSError(err, f"unmount network namespace {name}: {os.strerror(err)}")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return True


def list_namespaces(prefix: str = "") -> list[str]:
    try:
        return sorted(n for n in os.listdir(NETNS_RUN_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def namespace_inode(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def pids_in_namespaces(paths: Iterable[str]) -> dict[int, str]:
    """Every process whose network namespace is one of `paths` (pid -> path)."""
    wanted = {}
    for path in paths:
        ino = namespace_inode(path)
        if ino:
            wanted[ino] = path
    found: dict[int, str] = {}
    if not wanted:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        ino = namespace_inode(f"/proc/{entry}/ns/net")
        if ino in wanted:
            found[int(entry)] = wanted[ino]
    return found
