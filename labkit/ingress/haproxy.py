"""HAProxy, run from the host inside each proxy pod's network namespace (as the DNS server is), so it
works for netns pods and pause containers alike and no image needs it.

Each pod's HAProxy runs in master-worker mode (`-W -db`), with its master CLI on a socket in the
lab's folder (`-S`). A reload is SIGUSR2 to the master: it re-reads the config, starts new workers
on the same listening sockets and lets the old ones finish the connections they hold (up to
`hard-stop-after`), so `apply` never drops an established connection. The config is checked
(`haproxy -c`) before any reload, so a bad one fails `apply` and leaves the running one serving.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence

from labkit import processes
from labkit.errors import LabkitError

HAPROXY = "haproxy"
START_TIMEOUT = 10.0


def command(config: str, master_socket: str) -> list[str]:
    return [HAPROXY, "-W", "-db", "-f", config, "-S", f"{master_socket},mode,600"]


def check_config(config: str) -> None:
    """`haproxy -c`: a config HAProxy would refuse fails here, with its own words."""
    try:
        proc = subprocess.run([HAPROXY, "-c", "-q", "-f", config], capture_output=True, text=True, check=False,
                              timeout=30)
    except FileNotFoundError:
        raise LabkitError("haproxy is not installed (apt-get install haproxy): the ingress controller runs it")\
            from None
    if proc.returncode != 0:
        raise LabkitError(f"HAProxy refuses the ingress config {config}: {(proc.stdout + proc.stderr).strip()[-800:]}")


def master_cli(master_socket: str, line: str, timeout: float = 2.0) -> str:
    """One command on the master CLI; its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(master_socket)
        sock.sendall(line.encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)  # one command: the master answers and closes
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


def workers(master_socket: str) -> list[int]:
    """The pids of the master's current workers (not the old ones still finishing connections)."""
    try:
        text = master_cli(master_socket, "show proc")
    except OSError:
        return []
    found, section = [], ""
    for line in text.splitlines():
        if line.startswith("#"):
            section = line.strip("# ").split()[0].lower() if line.strip("# ") else section
            continue
        fields = line.split()
        if section == "workers" and len(fields) >= 2 and fields[0].isdigit() and fields[1] == "worker":
            found.append(int(fields[0]))
    return found


def _wait_for_new_workers(master_socket: str, old: set[int], proc: subprocess.Popen | None, log: str,
                          name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        now = workers(master_socket)
        if now and not set(now) & old:
            return
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            with open(log, encoding="utf-8", errors="replace") as fh:
                tail = fh.read()[-600:].strip()
            raise LabkitError(f"HAProxy of ingress pod {name} did not {'start' if not old else 'reload'}: {tail}")
        time.sleep(0.01)


def start(name: str, netns_path: str, config: str, folder: str, timeout: float = START_TIMEOUT) -> None:
    """Start HAProxy for proxy pod `name` in `netns_path`; return once a worker serves."""
    pidfile, log, master = (os.path.join(folder, f"{name}{ext}") for ext in (".pid", ".log", ".sock"))
    if os.path.exists(master):
        os.unlink(master)
    with open(log, "ab") as out:
        proc = subprocess.Popen(["nsenter", f"--net={netns_path}", "--", *command(config, master)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    processes.forked.add(proc.pid)
    processes.write_pid_file(pidfile, proc.pid)  # nsenter execs haproxy: the same pid is the master
    _wait_for_new_workers(master, set(), proc, log, name, timeout)


def reload(name: str, folder: str, timeout: float = START_TIMEOUT) -> bool:
    """Reload a running HAProxy; False when none runs for `name` (start one)."""
    pidfile, log, master = (os.path.join(folder, f"{name}{ext}") for ext in (".pid", ".log", ".sock"))
    proc = processes.recorded(pidfile, marker=folder)
    if proc is None:
        return False
    old = set(workers(master))
    if not processes.signal_process(proc, signal.SIGUSR2):
        return False
    _wait_for_new_workers(master, old, None, log, name, timeout)
    return True


def stop_others(folder: str, keep: Sequence[str]) -> None:
    """Stop the HAProxy of every proxy pod not in `keep` (pods `apply` removed), and forget it."""
    if not os.path.isdir(folder):
        return
    for entry in sorted(os.listdir(folder)):
        name, ext = os.path.splitext(entry)
        if ext != ".pid" or name in keep:
            continue
        path = os.path.join(folder, entry)
        proc = processes.recorded(path, marker=folder)
        if proc is not None:
            processes.stop([proc])
        for leftover in (path, os.path.join(folder, f"{name}.sock")):
            if os.path.exists(leftover):
                os.unlink(leftover)
