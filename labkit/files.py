"""Files other programs read while labkit writes them: written whole, then renamed into place.

Every file and folder labkit makes gets an explicit mode, whatever the caller's
umask: labkit runs as root, and a world-writable pid file, launcher or hosts
file would let any user steer it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DIR_MODE = 0o755


def makedirs(path: str | os.PathLike, mode: int = DIR_MODE) -> None:
    """os.makedirs, with `mode` given to every folder it creates (not masked by the umask)."""
    missing = []
    folder = Path(path)
    while not folder.is_dir():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for created in reversed(missing):
        try:
            os.mkdir(created, mode)
        except FileExistsError:
            if not created.is_dir():
                raise
            continue
        os.chmod(created, mode)


def write_atomic(path: str | os.PathLike, text: str, mode: int = 0o644, *, sync: bool = False) -> Path:
    """Write `text` to `path` through a temp file in the same folder and a rename, so a reader
    sees the old file or the new one, never half of one (a CNI runtime, a reloading server).
    `sync`: fsync before the rename, for files that must survive a crash."""
    target = Path(path)
    makedirs(target.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=str(target.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return target


def write_file(path: str | os.PathLike, text: str, mode: int = 0o644) -> None:
    """Write `text` in place, with `mode` whatever the umask: for a file nothing reads until labkit is
    done with it (a pod's hosts and resolv.conf, before its holder starts), where write_atomic's temp file
    and rename would be work for nothing. A symlink planted at `path` is refused, not followed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fd, mode)
        fh.write(text)


@contextmanager
def umask(mask: int = 0o022) -> Iterator[None]:
    """Run with `mask` as the umask: the servers and files a verb creates (logs, the servers' own
    pid files and sockets) never inherit a permissive umask from the caller."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)
