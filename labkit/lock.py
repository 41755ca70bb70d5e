"""One verb at a time per lab: `up`, `apply` and `down` hold the lab's lock while they change it.

The lock is an flock on <state root>/.<lab>.lock, which also records who holds
it, so a second caller is told which command has the lab rather than racing
it. `status` and `exec` only read, and take no lock. The file lives beside the
lab's state folder (which `down` removes); `down` removes the lock file too,
and a caller that locked a file since unlinked tries again on the new one.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from labkit import paths
from labkit.errors import LabkitError
from labkit.files import makedirs

_held: dict[str, int] = {}  # lab -> depth: `up` that fails calls `down` on its own lab


class LabBusy(LabkitError):
    """Another labkit command holds the lab."""


@contextmanager
def lab_lock(lab: str, verb: str) -> Iterator[None]:
    """Hold lab `lab` for `verb`; LabBusy at once if another process holds it."""
    path = paths.lock_path(lab)
    if lab in _held:
        _held[lab] += 1
        try:
            yield
        finally:
            _held[lab] -= 1
        return
    fd = _acquire(path, lab)
    _held[lab] = 1
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {verb}\n".encode(), 0)
        yield
    finally:
        del _held[lab]
        if not os.path.isdir(paths.lab_dir(lab)):  # the lab is gone (down, a failed up, an apply of no lab)
            _unlink_if_mine(path, fd)
        os.close(fd)


def _acquire(path: str, lab: str) -> int:
    makedirs(os.path.dirname(path))
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            os.fchmod(fd, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise LabBusy(f"lab {lab} is busy: another labkit {holder} holds it; "
                              "try again when it has finished") from None
            raise
        try:  # `down` may have removed the file between our open and flock: lock the current one
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _holder(fd: int) -> str:
    try:
        pid, verb = os.pread(fd, 64, 0).decode().split()[:2]
        return f"{verb} (pid {int(pid)})"
    except (OSError, ValueError):
        return "command"


def _unlink_if_mine(path: str, fd: int) -> None:
    """Remove the lock file while still holding it, and only if it is the file we locked: once
    unlinked, another caller may have created and locked a new one, which must stay."""
    try:
        if os.path.samestat(os.stat(path), os.fstat(fd)):
            os.unlink(path)
    except FileNotFoundError:
        pass
