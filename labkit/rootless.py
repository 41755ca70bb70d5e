"""Labs without root: an ordinary user's labkit runs inside namespaces that user owns.

How. The first labkit command a user runs starts a *holder*: a process in a new user
namespace (the user mapped to uid 0, nothing else mapped), a new mount namespace and a
new network namespace (the lab's "host" side: its mgmt bridge and host links live
there, never in the machine's own network). In its mount namespace /run is a fresh
tmpfs into which every entry of the real /run is bind-mounted back, except `netns`
and `labkit`: so /run/netns is the user's own (lab namespaces are files there, as
root's labs are in the real one) and root's lab state is out of sight. Then the holder
execs `sleep infinity`: it only keeps the namespaces alive. Every later labkit
process of that user (the CLI, the pytest plugin) joins the holder with setns(2)
in-process, first thing, and from then on is uid 0 of its namespaces: the whole of
labkit — netns creation, veth, bridges, vxlan, nftables, sysctls, pods' mount
namespaces, the CNI and DNS servers — runs its ordinary root code paths unchanged.

Why this design rather than the others tried on paper:
- running every verb under `unshare -Urn` afresh would lose the lab when the command
  ends (namespaces live only while something holds them, and /run/netns files are
  bind mounts that belong to one mount namespace);
- re-executing through `nsenter -U -m -n -t HOLDER` works too, but pays a second
  interpreter start (~150 ms with pyroute2) per command and cannot carry the pytest
  plugin's in-process calls; setns from the process itself (allowed: it is
  single-threaded when it joins, and the user owns the user namespace) costs nothing;
- a rootless `ip netns` with a per-user NETNS_RUN_DIR does not exist: the path is
  compiled into iproute2 and into labkit's own calls, so the private mount is what
  keeps them all agreeing.

State lives in `$XDG_RUNTIME_DIR/labkit` (LABKIT_STATE_DIR is set to it), which is
the user's own (mode 0700) on a tmpfs, like the namespaces. Without XDG_RUNTIME_DIR
labkit refuses, naming what to set: guessing a shared folder (/tmp) would hand
another user a name to squat.

Users cannot touch each other: a user's lab namespaces are visible only inside that
user's mount namespace, state files sit in a 0700 folder, every process of the lab
runs with the user's real uid (another user can signal none of them), and joining
the holder needs capabilities in its user namespace, which only its owner has. Lab
names are therefore per user.

The holder stops when `down` leaves no lab behind (`stop_holder_if_idle`). Every
joined process holds a shared flock on the holder's lock file; stopping takes it
exclusively, so a holder that another command is still using is never stopped.

What does not work without root, said when asked: the docker runtime (its engine is
root's) and `host-access` (the host's own network is out of reach of a user).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
import subprocess
import sys
import threading

from labkit.errors import LabkitError

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_BIND = 4096
MS_REC = 16384

HOLDER = ".holder"  # <state root>/.holder: pid (pid and user-namespace inode), lock; not a lab name
KEPT_PRIVATE = ("netns", "labkit", "docker")  # entries of /run the holder does not bring back (docker: root's)

_lock_fd: int | None = None  # the shared flock a joined process holds on the holder's lock

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def joined() -> bool:
    """True in a process that joined a user's holder (`enter`), and in what it starts: labkit as an
    ordinary user. (Not "in some user namespace": root in an unprivileged container stays root here.)"""
    return os.environ.get("LABKIT_ROOTLESS") == "1"


def needed() -> bool:
    """Whether this process must join (or start) its user's holder before doing lab work."""
    return os.geteuid() != 0


def state_root() -> str:
    """$XDG_RUNTIME_DIR/labkit, after checking XDG_RUNTIME_DIR is this user's own folder."""
    base = os.environ.get("XDG_RUNTIME_DIR", "")
    hint = (f"set XDG_RUNTIME_DIR to a folder of your own with mode 0700 (a login session sets "
            f"/run/user/{os.getuid()})")
    if not base or not os.path.isabs(base):
        raise LabkitError(f"labkit without root keeps its labs in $XDG_RUNTIME_DIR/labkit, and XDG_RUNTIME_DIR "
                          f"is {'not set' if not base else repr(base) + ', not an absolute path'}: {hint}")
    try:
        st = os.stat(base)
    except OSError as exc:
        raise LabkitError(f"XDG_RUNTIME_DIR={base}: {exc.strerror}: {hint}") from None
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise LabkitError(f"XDG_RUNTIME_DIR={base} is not yours alone (owner uid {st.st_uid}, mode "
                          f"{st.st_mode & 0o777:o}): {hint}")
    return os.path.join(os.path.normpath(base), "labkit")


def _holder_path(root: str, name: str) -> str:
    return os.path.join(root, HOLDER, name)


def enter() -> str:
    """Join this user's holder (starting it if none runs) and point labkit's state root at
    $XDG_RUNTIME_DIR/labkit. Returns the state root. Call while single-threaded, first thing."""
    global _lock_fd
    root = state_root()
    fd = _lock_holder(root)
    try:
        pid = running_holder(root) or _start_holder(root)
        _join(pid)
    except BaseException:
        os.close(fd)
        raise
    fcntl.flock(fd, fcntl.LOCK_SH)  # held until this process exits: the holder is in use
    _lock_fd = fd
    os.environ["LABKIT_STATE_DIR"] = root
    os.environ["LABKIT_ROOTLESS"] = "1"
    return root


def _lock_holder(root: str) -> int:
    """Open and lock (exclusively) the holder's lock file, making the folders as needed; a file that
    `stop_holder_if_idle` unlinked meanwhile is given up for the current one."""
    while True:
        for folder in (root, os.path.join(root, HOLDER)):
            try:
                os.mkdir(folder, 0o700)
            except FileExistsError:
                pass
            st = os.lstat(folder)
            if st.st_uid != os.getuid() or not os.path.isdir(folder) or os.path.islink(folder):
                raise LabkitError(f"{folder} is not a folder of yours: remove it")
            os.chmod(folder, 0o700)
        path = _holder_path(root, "lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.path.samestat(os.stat(path), os.fstat(fd)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def running_holder(root: str) -> int | None:
    """The holder's pid if the one recorded still runs (same pid, same user namespace), else None."""
    try:
        with open(_holder_path(root, "pid"), encoding="ascii") as fh:
            pid_text, ino_text = fh.read().split()
        pid, ino = int(pid_text), int(ino_text)
        st = os.stat(f"/proc/{pid}/ns/user")
    except (OSError, ValueError):
        return None
    return pid if st.st_ino == ino and os.stat(f"/proc/{pid}").st_uid == os.getuid() else None


def _start_holder(root: str) -> int:
    read_end, write_end = os.pipe()
    argv = ["unshare", "--user", "--map-root-user", "--mount", "--net", "--propagation", "private", "--",
            sys.executable, "-c", "import sys; from labkit.rootless import hold; hold(int(sys.argv[1]))",
            str(write_end)]
    try:
        proc = subprocess.Popen(argv, pass_fds=(write_end,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True, cwd="/")
    except FileNotFoundError:
        raise LabkitError("labkit without root needs `unshare` (util-linux)") from None
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "r", encoding="utf-8") as fh:
        answer = fh.read().strip()
    if answer != "ready":
        proc.kill()
        err = (proc.communicate()[1] or b"").decode(errors="replace").strip()
        proc.wait()
        raise LabkitError(f"could not make the user namespace for labs without root: {answer or err or 'no answer'}"
                          " (are unprivileged user namespaces enabled? sysctl kernel.unprivileged_userns_clone)")
    proc.stderr.close()  # type: ignore[union-attr]
    # It lives on as `sleep infinity` (re-parented when this process exits).
    ino = os.stat(f"/proc/{proc.pid}/ns/user").st_ino
    tmp = _holder_path(root, "pid.tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600), "w") as fh:
        fh.write(f"{proc.pid} {ino}\n")
    os.replace(tmp, _holder_path(root, "pid"))
    return proc.pid


def hold(ready_fd: int) -> None:
    """The holder's body (run by `unshare` in the new namespaces): make /run private but for what
    the machine's /run holds besides netns and labkit, a sysfs of this network namespace, then
    say "ready" and become `sleep infinity`."""
    try:
        _private_run()
        _private_etc_netns()
        try:  # /sys/class/net of this namespace, not the machine's
            _check(_libc.mount(b"sysfs", b"/sys", b"sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, None), "mount /sys")
        except OSError:
            pass
        os.write(ready_fd, b"ready\n")
    except OSError as exc:
        os.write(ready_fd, f"{exc}\n".encode())
        raise SystemExit(1) from None
    os.close(ready_fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.execvp("sleep", ["sleep", "infinity"])


def _private_run() -> None:
    old = os.open("/run", os.O_RDONLY | os.O_DIRECTORY)
    _check(_libc.mount(b"tmpfs", b"/run", b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=755"), "mount a tmpfs on /run")
    for name in os.listdir(f"/proc/self/fd/{old}"):
        if name in KEPT_PRIVATE:
            continue
        source, target = f"/proc/self/fd/{old}/{name}", f"/run/{name}"
        try:
            if os.path.islink(source):
                os.symlink(os.readlink(source), target)
                continue
            if os.path.isdir(source):
                os.mkdir(target, 0o755)
            else:
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o644))
            _check(_libc.mount(source.encode(), target.encode(), None, MS_BIND | MS_REC, None), f"bind /run/{name}")
        except OSError:
            continue  # an entry we may not bind (another user's private folder) stays out of sight
    os.close(old)
    os.mkdir("/run/netns", 0o755)


def _private_etc_netns() -> None:
    """/etc/netns (the per-namespace /etc files `ip netns exec` reads, which labkit writes) of our own:
    a tmpfs on it when the machine has one, else an overlay of /etc whose changes stay in /run."""
    if os.path.isdir("/etc/netns"):
        _check(_libc.mount(b"tmpfs", b"/etc/netns", b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=755"),
               "mount a tmpfs on /etc/netns")
        return
    for folder in ("/run/.etc", "/run/.etc/upper", "/run/.etc/work"):
        os.mkdir(folder, 0o755)
    _check(_libc.mount(b"overlay", b"/etc", b"overlay", 0,
                       b"lowerdir=/etc,upperdir=/run/.etc/upper,workdir=/run/.etc/work"), "overlay /etc")
    os.mkdir("/etc/netns", 0o755)


def _join(pid: int) -> None:
    """setns into the holder's user, mount and network namespaces, keeping the working directory."""
    if threading.active_count() > 1:
        raise LabkitError("internal: joining the labs' user namespace needs a single-threaded process")
    try:
        cwd: str | None = os.getcwd()
    except OSError:
        cwd = None
    fds = [(os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC), flag, ns)
           for ns, flag in (("user", CLONE_NEWUSER), ("mnt", CLONE_NEWNS), ("net", CLONE_NEWNET))]
    try:
        for fd, flag, ns in fds:
            _check(_libc.setns(fd, flag), f"join the holder's {ns} namespace (pid {pid})")
    except OSError as exc:
        raise LabkitError(f"could not enter your labs' namespaces: {exc}") from None
    finally:
        for fd, _, _ in fds:
            os.close(fd)
    try:
        os.chdir(cwd or "/")
    except OSError:
        os.chdir("/")


def labs_remain(root: str) -> bool:
    try:
        return any(not n.startswith(".") for n in os.listdir(root))
    except FileNotFoundError:
        return False


def stop_holder_if_idle() -> bool:
    """After `down`: stop the holder when no lab remains and no other labkit process uses it.
    True if it was stopped (or none ran)."""
    global _lock_fd
    root = os.environ.get("LABKIT_STATE_DIR")
    if _lock_fd is None or not root or labs_remain(root):
        return False
    try:
        fcntl.flock(_lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False  # another command of this user is inside: it stops the holder when done
        raise
    if labs_remain(root):
        fcntl.flock(_lock_fd, fcntl.LOCK_SH)
        return False
    pid = running_holder(root)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)  # sleep: nothing to tidy; its namespaces go with the last member
    for name in ("pid", "pid.tmp", "lock"):  # the lock last, still held: a waiter then retries on a new one
        try:
            os.unlink(_holder_path(root, name))
        except FileNotFoundError:
            pass
    for folder in (os.path.join(root, HOLDER), root):
        try:
            os.rmdir(folder)
        except OSError:
            pass  # a command of this user made something meanwhile: it is theirs to finish
    return True


def check_plan(runtime: str, host_access: bool) -> None:
    """Refuse, clearly, what a lab without root cannot have (called by `up` with the plan's choices)."""
    if not joined():
        return
    if runtime == "docker":
        raise LabkitError("the docker runtime needs root (its engine is root's): run this lab as root, or use "
                          "the netns runtime (runtime: netns) for a lab without root")
    if host_access:
        raise LabkitError("mgmt.host-access needs root: a lab without root lives in your own namespaces and "
                          "cannot give the machine's network an address on it; leave host-access out "
                          "(labkit exec reaches every node and pod)")
