"""Processes of a pod on the netns runtime: a holder that owns the pod's namespaces, and its containers.

A pod is its own network namespace plus a mount and a UTS namespace, so it
sees its own hostname, /etc/hosts and /etc/resolv.conf (DESIGN.md section 7).
The holder is forked from here rather than run through `unshare`, `mount` and
`hostname` commands: one fork and a few syscalls cost less than the six
processes those would take.

A pod's processes (and `labkit exec` into a pod) run with the capabilities a
container gets by default (Docker's set: no NET_ADMIN, no SYS_ADMIN), so a pod
cannot change its own routes or leave its namespaces, as in a real cluster;
`securityContext.capabilities` and `privileged: true` widen or narrow the set.
They still run as root on the host's filesystem: the netns runtime isolates
the network, hostname and /etc/hosts, /etc/resolv.conf, not files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from labkit import processes
from labkit.errors import LabkitError
from labkit.net.syscalls import (
    CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWUTS, MNT_DETACH, MS_BIND, MS_PRIVATE, MS_REC, check, libc,
)
from labkit.runtime.base import DEFAULT_CAPABILITIES, ContainerSpec

EXEC_CAPABILITIES_FILE = "exec-capabilities"  # in a pod's folder: the set `labkit exec` into it runs with
EXIT_SUFFIX = ".exit"  # in a pod's folder, beside <container>.log: the exit code of a container that ran once
# Runs the container's argv ("$@"), then writes its exit code to the file named by $0.
_RECORD_EXIT = 'code=0; "$@" || code=$?; echo "$code" > "$0"; exit "$code"'


def recording_exit(argv: Sequence[str], exit_file: str) -> list[str]:
    """argv run so that its exit code is written to `exit_file` when it ends (values are arguments, never
    part of the shell text)."""
    return ["sh", "-c", _RECORD_EXIT, exit_file, *argv]


def exit_codes(folder: str) -> list[int | None]:
    """The exit code of every container started in a pod's folder (by its log), None while it runs."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    codes: list[int | None] = []
    for name in sorted(entries):
        if not name.endswith(".log") or name == "holder.log":
            continue
        try:
            with open(os.path.join(folder, name[:-4] + EXIT_SUFFIX), encoding="ascii") as fh:
                codes.append(int(fh.read().strip() or "1"))
        except (OSError, ValueError):
            codes.append(None)
    return codes


def pod_processes(holder_pid: int) -> list[processes.ProcessId]:
    """The holder and every process in its mount namespace: a hostNetwork pod's own processes, told
    apart from its node's, which share the network namespace but not the mount namespace."""
    try:
        mine = os.stat(f"/proc/{holder_pid}/ns/mnt")
    except OSError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            theirs = os.stat(f"/proc/{entry}/ns/mnt")
        except OSError:
            continue
        if (theirs.st_dev, theirs.st_ino) == (mine.st_dev, mine.st_ino):
            proc = processes.identify(int(entry))
            if proc is not None:
                found.append(proc)
    return found


def check_program(argv: Sequence[str]) -> None:
    if "/" not in argv[0] and shutil.which(argv[0]) is None:
        raise LabkitError(f"command {argv[0]!r} not found on this machine (the netns runtime runs pod "
                          "commands from the host's filesystem)")


def capabilities(security_context: Any | None) -> tuple[str, ...] | None:
    """A container's capability set from its securityContext; None means every capability (privileged)."""
    if security_context is not None and security_context.privileged:
        return None
    caps = set(DEFAULT_CAPABILITIES)
    wanted = security_context.capabilities if security_context is not None else None
    if wanted is not None:
        drop = {c.upper().removeprefix("CAP_") for c in wanted.drop}
        add = {c.upper().removeprefix("CAP_") for c in wanted.add}
        caps = set() if "ALL" in drop else caps - drop
        if "ALL" in add:
            return None
        caps |= add
    return tuple(sorted(caps))


def with_capabilities(caps: Sequence[str] | None, argv: Sequence[str]) -> list[str]:
    """argv run with only `caps` (bounding set; inheritable and ambient cleared): as root, a process
    execs with the bounding set as its permitted set, and cannot gain more (not through a setuid file)."""
    if caps is None:
        return list(argv)
    bounding = ",".join(["-all", *(f"+{c.lower()}" for c in caps)])
    return ["setpriv", "--inh-caps=-all", "--ambient-caps=-all", f"--bounding-set={bounding}", "--", *argv]


def record_exec_capabilities(folder: str, caps: Sequence[str] | None) -> None:
    """What `labkit exec` into the pod runs with: its first container's set (kubectl exec's default container).
    The default set is the absence of the file (one file less per pod: `up` writes hundreds)."""
    from labkit.files import write_file

    if caps is not None and set(caps) == set(DEFAULT_CAPABILITIES):
        return
    write_file(os.path.join(folder, EXEC_CAPABILITIES_FILE), "ALL\n" if caps is None else " ".join(caps) + "\n")


def exec_capabilities(folder: str) -> tuple[str, ...] | None:
    """The set recorded for a pod; the default set when none was (never more than a pod gets)."""
    try:
        with open(os.path.join(folder, EXEC_CAPABILITIES_FILE), encoding="ascii") as fh:
            words = fh.read().split()
    except (OSError, UnicodeDecodeError):
        return DEFAULT_CAPABILITIES
    return None if words == ["ALL"] else tuple(w for w in words if w.isidentifier())



class StandInLaunchers:
    """labkit's stand-ins, started through one launcher per lab and batch of pods (labkit.standin's
    `launch`: one interpreter forks every stand-in into its pod's network and UTS namespaces, with
    NET_BIND_SERVICE alone, so each costs a fork, not an interpreter). A launcher starts with the
    batch's first stand-in and ends at `close` (or when labkit exits: its input ends); the stand-ins
    live on, each writing its pid file in its pod's folder once its ports are bound. Requests are only
    written, never waited for one by one: `close` reads what could not be started."""

    def __init__(self, state_root: str | None = None) -> None:
        self.state_root = state_root
        self._running: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def _files(self, lab: str):
        from labkit import paths

        return paths.lab(lab, root=self.state_root) if self.state_root else paths.lab(lab)

    def start(self, lab: str, *, net: str, uts: str, namespace: str, pod: str, container: ContainerSpec) -> None:
        """Have the stand-in of `container` started. `net`, `uts`: namespace paths setns() accepts."""
        from labkit.files import makedirs

        stand_in = container.stand_in
        assert stand_in is not None
        files = self._files(lab)
        folder = files.pod_dir(namespace, pod)
        makedirs(folder)
        fields = [net, uts, os.path.join(folder, f"{container.name}.log"),
                  os.path.join(folder, f"{container.name}.pid"), f"{namespace}/{pod}", container.name,
                  ",".join(map(str, stand_in.tcp)), ",".join(map(str, stand_in.udp))]
        if any("\t" in f or "\n" in f for f in fields):  # names are checked long before; a request is one line
            raise LabkitError(f"pod {namespace}/{pod}: cannot start a stand-in for container {container.name!r}")
        with self._lock:
            launcher = self._running.get(lab)
            if launcher is None:
                launcher = self._running[lab] = self._launch(files.dir)
            try:
                launcher.stdin.write("\t".join(fields) + "\n")
                launcher.stdin.flush()
            except OSError:
                raise LabkitError(f"pod {namespace}/{pod}: the stand-ins' launcher exited; see "
                                  f"{os.path.join(files.dir, 'standin-launcher.log')}") from None

    def _launch(self, lab_dir: str) -> subprocess.Popen:
        from labkit.lean import module_argv

        fd = os.open(os.path.join(lab_dir, "standin-launcher.log"),
                     os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "ab") as log:
            # `--state` names the lab's folder on its command line (and so on its stand-ins'): `down` and
            # `leftovers` find them by it.
            return subprocess.Popen(module_argv("labkit.standin", "launch", "--state", lab_dir),
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                                    cwd="/", start_new_session=True,
                                    env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})

    def close(self, lab: str) -> None:
        """End the lab's launcher once it has started everything asked (the stand-ins keep running);
        LabkitError names what it could not start."""
        with self._lock:
            launcher = self._running.pop(lab, None)
        if launcher is None:
            return
        try:
            answers, _ = launcher.communicate(timeout=60)  # ends its input, reads what it answered
        except subprocess.TimeoutExpired:
            launcher.kill()
            answers, _ = launcher.communicate()
        failed = [line.removeprefix("ERR ") for line in answers.splitlines() if line.strip()]
        if launcher.returncode != 0:
            failed.append(f"the launcher exited with {launcher.returncode}; see "
                          f"{os.path.join(self._files(lab).dir, 'standin-launcher.log')}")
        if failed:
            raise LabkitError("stand-ins not started: " + "; ".join(failed))


def _fork_checked(child, what: str) -> int:
    """Fork; the child runs child() and must exec. Its setup errors come back through a pipe."""
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, False)
    pid = os.fork()
    if pid == 0:  # child: syscalls only, then exec; never return into the parent's code
        try:
            os.close(read_end)
            child(write_end)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent through the pipe
            try:
                os.write(write_end, f"{exc}".encode() or b"failed")
            finally:
                os._exit(127)
        os._exit(127)
    os.close(write_end)
    message = b""
    while chunk := os.read(read_end, 4096):  # the pipe closes on exec (close-on-exec) or exit
        message += chunk
    os.close(read_end)
    if message:
        os.waitpid(pid, 0)
        raise LabkitError(f"{what}: {message.decode(errors='replace')}")
    return pid


def spawn_holder(netns_path: str, binds: Mapping[str, str], hostname: str, log_path: str) -> int:
    """Start the pod's holder process: new mount + UTS namespaces, the pod's netns, its files bound over /etc."""
    sleep = shutil.which("sleep") or "/bin/sleep"

    def child(_: int) -> None:
        os.setsid()
        net = os.open(netns_path, os.O_RDONLY)
        check(libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare mount/uts")
        check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
        # The private copy of /run/netns would pin every lab's namespaces (EBUSY on delete): drop it.
        libc.umount2(b"/run/netns", MNT_DETACH)
        check(libc.setns(net, CLONE_NEWNET), "enter pod network namespace")
        os.close(net)
        for target, source in binds.items():
            check(libc.mount(source.encode(), target.encode(), None, MS_BIND, None), f"bind {source} on {target}")
        name = hostname.encode()
        check(libc.sethostname(name, len(name)), "set hostname")
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.execv(sleep, ["sleep", "infinity"])

    pid = _fork_checked(child, f"start pod holder in {netns_path}")
    processes.forked.add(pid)  # reaped by processes.stop
    return pid


def spawn_in_pod(holder_pid: int, argv: Sequence[str], env: Mapping[str, str], log_path: str,
                 caps: Sequence[str] | None = DEFAULT_CAPABILITIES) -> int:
    """Start argv inside the holder's mount, UTS and network namespaces, with capabilities `caps`.

    Through `nsenter`, spawned with vfork by subprocess: 3 ms, where forking
    this (large) Python process costs 7.
    """
    check_program(argv)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "ab") as log:
        proc = subprocess.Popen(nsenter_argv(holder_pid, argv, caps), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, cwd="/", start_new_session=True,
                                env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), **env})
    return proc.pid


def nsenter_argv(holder_pid: int, argv: Sequence[str],
                 caps: Sequence[str] | None = DEFAULT_CAPABILITIES) -> list[str]:
    """The command line that runs argv in a pod with capabilities `caps`, for exec from a shell or a test."""
    return ["nsenter", "-t", str(holder_pid), "-m", "-u", "-n", "--", *with_capabilities(caps, argv)]
