"""Processes labkit starts and stops, known by identity rather than by a number alone.

A pid file records a process's pid and its start time (field 22 of
/proc/PID/stat, in clock ticks since boot). The pair names one process for the
machine's uptime: a pid the kernel has since given to another process has
another start time, so labkit never signals or enters it. A pid file written
by a server itself (bare pid) is trusted only for a process that started
before the file was written and whose command line names what it was given
(`marker`: the lab's state folder).

Stopping is TERM, a grace period, then KILL, and returns only once the
processes are gone (and reaped, for children of this process), so a namespace
can be deleted right after. This is the one place labkit stops processes: the
runtimes, `down` and the phases all come here.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from labkit.files import write_atomic
from labkit.net.netns import pids_in_namespaces

GRACE = 2.0  # seconds between TERM and KILL

# Children this process forked itself (pod holders): only these may be reaped here (others'
# children are theirs to wait for), so no zombie outlives a stop.
forked: set[int] = set()


@dataclass(frozen=True)
class ProcessId:
    pid: int
    start: int | None  # clock ticks after boot; None in a pid file written without it

    def __str__(self) -> str:
        return f"{self.pid} {self.start}" if self.start is not None else str(self.pid)


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (after the command name, which may hold spaces and ')')."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None  # field 22 is the 20th after ')'


def children(pid: int) -> set[int]:
    """Pids whose parent is `pid` (a server's workers)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields and len(fields) > 1 and int(fields[1]) == pid:
                found.add(int(entry))
    return found


def identify(pid: int) -> ProcessId | None:
    """The running process `pid` as a ProcessId; None if there is none (or only a zombie)."""
    fields = _stat_fields(pid)
    if not fields or fields[0] in ("Z", "X") or len(fields) <= 19:
        return None
    return ProcessId(pid, int(fields[19]))


def is_running(proc: ProcessId) -> bool:
    """Whether the process `proc` names is still the one running under its pid."""
    now = identify(proc.pid)
    return now is not None and (proc.start is None or now.start == proc.start)


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return []


def names(pid: int, marker: str) -> bool:
    """Whether the command line of `pid` has an argument naming `marker` (a path, or inside it)."""
    marker = marker.rstrip("/")
    return any(a == marker or a.startswith(marker + "/") or a.endswith("=" + marker) or ("=" + marker + "/") in a
               for a in cmdline(pid))


def write_pid_file(path: str, pid: int) -> ProcessId:
    """Record `pid` with its start time (0644: readable by status, writable by root only)."""
    proc = identify(pid) or ProcessId(pid, start_time(pid))
    write_atomic(path, f"{proc}\n", mode=0o644)
    return proc


def read_pid_file(path: str) -> ProcessId | None:
    """The ProcessId a pid file records, or None if it is missing or not a pid file."""
    try:
        with open(path, encoding="ascii") as fh:
            fields = fh.read(64).split()
        pid = int(fields[0])
        start = int(fields[1]) if len(fields) > 1 else None
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return None
    return ProcessId(pid, start) if pid > 1 else None


def recorded(path: str, marker: str | None = None) -> ProcessId | None:
    """The process a pid file names, if it still runs and is the one that was recorded; else None.

    Recorded start time: it must match. Bare pid (a server's own pid file): the process must have
    started before the file was written. With `marker`, its command line must also name it."""
    proc = read_pid_file(path)
    if proc is None:
        return None
    now = identify(proc.pid)
    if now is None or (proc.start is not None and now.start != proc.start):
        return None
    if proc.start is None and not _started_before(now, path):
        return None
    if marker is not None and not names(proc.pid, marker):
        return None
    return now


def _started_before(proc: ProcessId, path: str) -> bool:
    try:
        written = os.stat(path).st_mtime
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime = float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    boot = time.time() - uptime
    started = boot + (proc.start or 0) / os.sysconf("SC_CLK_TCK")
    return started <= written + 1.0  # a second of slack for the two clocks' rounding


def signal_process(proc: ProcessId, sig: int) -> bool:
    """Send `sig` to `proc` if it is still that process (pidfd where the kernel has it, so the
    check and the signal name the same process); True if sent."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        fd = None
    try:
        if not is_running(proc):
            return False
        if fd is not None:
            signal.pidfd_send_signal(fd, sig)
        else:
            os.kill(proc.pid, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        if fd is not None:
            os.close(fd)


def stop(procs: Iterable[ProcessId], grace: float = GRACE) -> None:
    """TERM, then KILL after `grace` seconds, each only while it is still the recorded process;
    returns once all are gone (children of this process reaped)."""
    procs = list(dict.fromkeys(procs))
    waiting = [p for p in procs if signal_process(p, signal.SIGTERM)]
    deadline = time.monotonic() + grace
    while waiting and time.monotonic() < deadline:
        waiting = [p for p in waiting if is_running(p)]
        if waiting:
            time.sleep(0.02)
    for p in waiting:
        signal_process(p, signal.SIGKILL)
    for p in waiting:
        while is_running(p):
            time.sleep(0.01)
    _reap([p.pid for p in procs])


def stop_in_namespaces(netns_paths: Sequence[str], grace: float = GRACE) -> None:
    """Stop every process living in these network namespaces: TERM, then KILL after `grace` seconds."""
    stop(_identified(pids_in_namespaces(netns_paths)), grace)
    for proc in _identified(pids_in_namespaces(netns_paths)):  # started while we were stopping the others
        signal_process(proc, signal.SIGKILL)


def pid_files(folder: str) -> list[str]:
    """Every pid file under `folder` (any depth): the servers a lab, or one part of it, started."""
    return sorted(os.path.join(where, name) for where, _, files in os.walk(folder) for name in files
                  if name.endswith(".pid"))


def stop_recorded(folder: str, marker: str | None = None, grace: float = GRACE) -> None:
    """Stop the processes the pid files under `folder` record, where each is still the recorded
    process (and, with `marker`, names it on its command line)."""
    stop([proc for path in pid_files(folder) if (proc := recorded(path, marker)) is not None], grace)


def _identified(pids: Iterable[int]) -> list[ProcessId]:
    return [proc for pid in pids if (proc := identify(pid)) is not None]


def _reap(pids: Iterable[int]) -> None:
    for pid in set(pids) & forked:
        forked.discard(pid)
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def naming(marker: str) -> list[int]:
    """Pids of every process, labkit's or not, whose command line names `marker` (a path, or inside it):
    what still uses a lab's state folder (a server, a `tail -f` of its log)."""
    marker = marker.rstrip("/")
    inside, skip = marker + "/", os.getpid()
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and int(e) != skip
            and any(a == marker or inside in a for a in cmdline(int(e)))]


def find_naming(marker: str, *, exclude: Sequence[int] = ()) -> list[ProcessId]:
    """Processes of labkit whose command line names `marker` (a lab's state folder): how `down`
    finds a lab's servers when their pid files are gone with the folder."""
    found = []
    skip = {os.getpid(), *exclude}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in skip:
            continue
        pid = int(entry)
        argv = cmdline(pid)
        if any("from labkit." in a or a.startswith("labkit.") for a in argv[:8]) and names(pid, marker):
            proc = identify(pid)
            if proc is not None:
                found.append(proc)
    return found
