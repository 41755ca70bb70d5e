"""One BIRD 2 daemon per speaker: its config rendered from templates/bird.conf.j2, started from the
host inside the node's network namespace, its files in the lab's state folder.

    bird -c <lab>/bgp/<node>/bird.conf -s <lab>/bgp/<node>/bird.ctl -P <lab>/bgp/<node>/bird.pid

`nsenter --net=<netns path>` enters a netns node's namespace or a container's (/proc/<pid>/ns/net)
alike, so the same daemon runs under both runtimes and no image needs BIRD. BIRD daemonizes and
writes its own pid file; labkit.processes trusts that pid only for a process started before the
file was written whose command line names the lab's folder, so `down` (every pid file under the
lab's folder) and `labkit.lab.leftovers` (every process naming the folder) find it with no code
of their own. On TERM, BIRD says goodbye to its peers (a Cease NOTIFICATION: they withdraw its
routes at once), removes the routes it installed, its socket and its pid file.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass

from labkit import paths, processes, templating
from labkit.errors import LabkitError
from labkit.files import makedirs, write_atomic

from .speakers import Speaker

TEMPLATE = "bird.conf.j2"
BIRD = "bird"
SOCKET_MAX = 107  # sun_path holds 108 bytes with the terminating NUL
KERNEL_METRIC = 32  # BIRD's default; a node's own connected routes (metric 0) win over its blackhole
START_TIMEOUT = 10.0


@dataclass(frozen=True)
class Timers:
    """The BGP timers every session gets: they bound how fast the lab converges (bench_bgp.py)."""

    hold: int = 6  # seconds without a message before a silent peer is declared down (BIRD's minimum is 3)
    # BIRD 2.0 sends a new session's first UPDATE with its next KEEPALIVE (measured: up to a keepalive
    # interval after Established), so the keepalive bounds how soon a started node's routes arrive.
    keepalive: int = 1
    connect_delay: int = 0  # after start, before the first connect (BIRD's default is 5)
    connect_retry: int = 2  # between attempts while a peer does not answer (default 120)
    error_wait: tuple[int, int] = (1, 5)  # after a session error, before it may start again (default 60, 300)

    def as_status(self) -> dict:
        return {"hold": self.hold, "keepalive": self.keepalive, "connect_delay": self.connect_delay,
                "connect_retry": self.connect_retry, "error_wait": list(self.error_wait), "graceful_restart": False}


TIMERS = Timers()


@dataclass(frozen=True)
class BirdFiles:
    """Where one speaker's daemon keeps its things (in labkit.paths' lab folder)."""

    dir: str
    lab_dir: str

    @property
    def config(self) -> str:
        return os.path.join(self.dir, "bird.conf")

    @property
    def socket(self) -> str:
        return os.path.join(self.dir, "bird.ctl")

    @property
    def pid_file(self) -> str:
        return os.path.join(self.dir, "bird.pid")

    @property
    def log(self) -> str:
        return os.path.join(self.dir, "bird.log")


def files_of(lab: str, node: str) -> BirdFiles:
    lab_paths = paths.lab(lab)
    found = BirdFiles(lab_paths.bird_dir(node), lab_paths.dir)
    if len(found.socket.encode()) > SOCKET_MAX:
        raise LabkitError(f"the BGP control socket path {found.socket} is longer than {SOCKET_MAX} bytes; "
                          "use a shorter LABKIT_STATE_DIR")
    return found


def render(lab: str, speaker: Speaker, files: BirdFiles, timers: Timers = TIMERS) -> str:
    """The daemon's config (BIRD's own syntax)."""
    return templating.render(TEMPLATE, trim=True, lab=lab, s=speaker, log=files.log, socket=files.socket,
                             timers=timers, kernel_metric=KERNEL_METRIC)


def write_config(lab: str, speaker: Speaker, timers: Timers = TIMERS) -> BirdFiles:
    files = files_of(lab, speaker.node)
    makedirs(files.dir)
    write_atomic(files.config, render(lab, speaker, files, timers), mode=0o644)
    return files


def running(files: BirdFiles) -> processes.ProcessId | None:
    """The speaker's daemon, if its pid file names a BIRD that still runs (never a reused pid)."""
    return processes.recorded(files.pid_file, marker=files.lab_dir)


def start(files: BirdFiles, netns_path: str, timeout: float = START_TIMEOUT) -> processes.ProcessId:
    """Start BIRD in the namespace at `netns_path`; return once it answers on its control socket."""
    for stale in (files.pid_file, files.socket):  # of a daemon that was killed: BIRD would refuse the socket
        if os.path.exists(stale):
            os.unlink(stale)
    argv = ["nsenter", f"--net={netns_path}", "--", BIRD, "-c", files.config, "-s", files.socket,
            "-P", files.pid_file]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise LabkitError("bird is not installed (Debian: apt-get install bird2)") from None
    if proc.returncode != 0:  # a config error, an unknown interface: BIRD says which line
        raise LabkitError(f"bird did not start in {netns_path}: {(proc.stderr or proc.stdout).strip()}")
    deadline = time.monotonic() + timeout
    from .birdc import BirdcError, show_status

    while True:
        daemon = running(files)
        if daemon is not None:
            try:
                show_status(files.socket)
                return daemon
            except BirdcError:
                pass
        if time.monotonic() > deadline:
            raise LabkitError(f"bird in {netns_path} did not answer on {files.socket} within {timeout:.0f} s; "
                              f"see {files.log}")
        time.sleep(0.01)


def stop(files: BirdFiles) -> bool:
    """Stop the speaker's daemon (TERM, then KILL); True if one ran."""
    daemon = running(files)
    if daemon is None:
        return False
    processes.stop([daemon])
    return True


def reconfigure(files: BirdFiles) -> None:
    """A running daemon re-reads its config (`birdc configure`): sessions whose settings did not change stay up."""
    from .birdc import ask

    ask(files.socket, "configure")
