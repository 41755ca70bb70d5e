"""Processes a lab runs from the host: pid files, and the one way labkit stops processes.

labkit starts daemons (the CNI server, DNS servers) and pod processes; each daemon
leaves a pid file in the lab's folder (labkit.paths names it). Stopping is TERM,
a grace period, then KILL, and returns only once the processes are gone, so a
namespace can be deleted right after. A pid is signalled only while it still
looks like the process that was recorded (a pid file can outlive its process,
and the kernel reuses pids).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable, Sequence

from labkit.files import write_atomic
from labkit.net.netns import pids_in_namespaces

GRACE = 2.0  # seconds between TERM and KILL

# Children this process forked itself (pod holders): only these may be reaped here (others'
# children are theirs to wait for), so no zombie outlives a stop.
forked: set[int] = set()


def write_pid_file(path: str, pid: int) -> None:
    """Record `pid` at `path`, atomically: a reader sees no pid or the whole pid."""
    write_atomic(path, f"{pid}\n")


def read_pid_file(path: str) -> int | None:
    """The pid recorded at `path`; None when there is no such file or it holds no pid."""
    try:
        with open(path, encoding="ascii") as fh:
            pid = int(fh.read().strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return pid if pid > 0 else None


def is_ours(pid: int) -> bool:
    """Whether `pid` is alive and a labkit process (its command line names labkit), not a reused pid."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"labkit" in fh.read() and alive(pid)
    except OSError:
        return False


def recorded_pid(path: str) -> int | None:
    """The pid recorded at `path` if that process still runs and is ours; else None."""
    pid = read_pid_file(path)
    return pid if pid is not None and is_ours(pid) else None


def pid_files(folder: str) -> list[str]:
    """Every pid file under `folder` (any depth): the daemons a lab, or one part of it, started."""
    return [os.path.join(where, name) for where, _, files in os.walk(folder) for name in files
            if name.endswith(".pid")]


def stop_recorded(folder: str, grace: float = GRACE) -> None:
    """Stop the processes the pid files under `folder` name, where they are still ours."""
    stop([pid for path in pid_files(folder) if (pid := recorded_pid(path)) is not None], grace)


def stop_in_namespaces(netns_paths: Sequence[str], grace: float = GRACE) -> None:
    """Stop every process living in these network namespaces: TERM, then KILL after `grace` seconds."""
    stop(list(pids_in_namespaces(netns_paths)), grace)
    for pid in pids_in_namespaces(netns_paths):  # started while we were stopping the others
        send(pid, signal.SIGKILL)


def stop(pids: Iterable[int], grace: float = GRACE) -> None:
    """TERM, then KILL after `grace` seconds; returns once all are gone."""
    targets = list(dict.fromkeys(pids))
    for pid in targets:
        send(pid, signal.SIGTERM)
    waiting = list(targets)
    deadline = time.monotonic() + grace
    while waiting and time.monotonic() < deadline:
        waiting = [p for p in waiting if alive(p)]
        if waiting:
            time.sleep(0.02)
    for pid in waiting:
        send(pid, signal.SIGKILL)
    for pid in waiting:
        while alive(pid):
            time.sleep(0.01)
    _reap(targets)


def send(pid: int, sig: int) -> None:
    """Signal `pid`; one that is gone already is not an error."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def alive(pid: int) -> bool:
    """Running (a zombie is not: it only waits to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def naming(text: str) -> list[int]:
    """Pids whose command line contains `text` (labkit's daemons are given paths in their lab's folder)."""
    wanted, pids = text.encode(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if wanted in fh.read():
                        pids.append(int(entry))
            except OSError:
                continue
    return [pid for pid in pids if alive(pid)]


def _reap(pids: Sequence[int]) -> None:
    for pid in set(pids) & forked:
        forked.discard(pid)
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
