"""The labkit CNI server: `labkit-cni` calls answered by one long-lived process.

A container runtime execs its CNI plugin once per pod and command. Starting
CPython costs ~10 ms, twice per pod: more than a Go plugin's whole ADD. So,
like Antrea's and Kube-OVN's node agents, labkit keeps the plugin loaded in a
server, and the `labkit-cni` in the CNI bin dir (templates/cni-launcher.sh.j2)
is a few lines of sh that hand the config on stdin to it with socat. The
server reads the rest of the call from the caller itself: the pid from
SO_PEERCRED, the CNI_* environment from /proc/<pid>/environ, the network
namespace it runs in (the node's) from /proc/<pid>/ns/net. The reply is
`<exit code>\\n<JSON or nothing>`; the launcher prints the JSON and exits
with the code, so the runtime cannot tell it from the plugin run in place.

A fixed pool of worker threads answers the calls (`--workers`, default 8): a
caller that connects and sends nothing holds a worker for at most `--timeout`
seconds (default 10) for its whole config, then gets a CNI error and is
closed, so idle connections cannot pile up threads. A worker enters the
caller's namespace for the call (setns moves only the calling thread) and
returns to the server's own before the next one.

    python -m labkit.cni.server --socket PATH [--workers N] [--timeout SECONDS]
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import socketserver
import stat
import struct
import sys
import threading
import time

from .errors import INTERNAL, INVALID_ENV, IO_FAILURE, CNIError
from .lite import dumps
from .main import config_version, run
from labkit.net.netlink import setns

MAX_CONFIG = 1 << 20  # a conflist's plugin config is a few KiB; anything near this is not one
WORKERS = 8  # calls answered at once; more wait in the listen backlog (a runtime starts pods a few at a time)
TIMEOUT = 10.0  # seconds a caller has to send its whole config (the launcher's is written at once)
PASSED_ENV = ("CNI_", "LABKIT_CNI_")  # the only variables of the caller the plugin may see


def caller_environment(raw: bytes) -> dict[str, str]:
    """The CNI variables in a /proc/<pid>/environ blob (NUL-separated KEY=VALUE)."""
    env = {}
    for entry in raw.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep and key.startswith(tuple(p.encode() for p in PASSED_ENV)):
            env[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return env


def reply(code: int, out: dict | None) -> bytes:
    """The wire answer the launcher decodes: exit code line, then the JSON to print."""
    return f"{code}\n".encode() + (dumps(out).encode() + b"\n" if out is not None else b"")


class CallHandler(socketserver.BaseRequestHandler):
    """One plugin call: enter the caller's netns, run the plugin with its env and stdin."""

    def handle(self) -> None:
        started = time.perf_counter()
        env: dict[str, str] = {}
        stdin = b""
        try:
            # stdin first, always: the launcher is still writing it, and an early answer would break its pipe
            pid, uid, stdin = self._receive()
            env = self._enter_caller(pid, uid)
            code, out = run(env, stdin)
        except CNIError as e:
            code, out = 1, e.to_dict(config_version(stdin))
        except Exception as e:  # noqa: BLE001 - the caller gets a CNI error, the server keeps serving
            err = CNIError(INTERNAL, f"labkit CNI server: {type(e).__name__}: {e}", repr(e))
            code, out = 1, err.to_dict(config_version(stdin))
        try:
            self.request.settimeout(self.server.call_timeout)
            self.request.sendall(reply(code, out))
        except OSError:
            pass  # the caller went away; nothing to tell it
        ms = (time.perf_counter() - started) * 1000
        print(f"{env.get('CNI_COMMAND', '?')} {env.get('CNI_CONTAINERID', '-')} {env.get('CNI_IFNAME', '-')}"
              f" -> {code} ({ms:.1f} ms)", file=sys.stderr, flush=True)

    def _receive(self) -> tuple[int, int, bytes]:
        """The caller's pid and uid (from the kernel, not from the caller) and its stdin."""
        sock: socket.socket = self.request
        pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        chunks, size = [], 0
        deadline = time.monotonic() + self.server.call_timeout  # for the whole config, not per recv
        while True:  # read to EOF even when too big, so the launcher's write succeeds
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
                chunk = sock.recv(65536)
            except TimeoutError:
                raise CNIError(IO_FAILURE, f"labkit CNI server: no complete config on stdin within "
                               f"{self.server.call_timeout:g} s",
                               "the caller must write its config and close its end") from None
            if not chunk:
                break
            size += len(chunk)
            if size <= MAX_CONFIG:
                chunks.append(chunk)
        if size > MAX_CONFIG:
            raise CNIError(INVALID_ENV, f"labkit CNI server: config on stdin exceeds {MAX_CONFIG} bytes")
        return pid, uid, b"".join(chunks)

    @staticmethod
    def _enter_caller(pid: int, uid: int) -> dict[str, str]:
        """Move this request's thread into the caller's network namespace; return its CNI variables."""
        if uid not in (0, os.geteuid()):
            raise CNIError(INVALID_ENV, f"labkit CNI server: uid {uid} may not call it")
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = caller_environment(fh.read())
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:  # e.g. the caller is in a pid namespace this server cannot see into
            raise CNIError(IO_FAILURE, f"labkit CNI server cannot see its caller (pid {pid})", str(e)) from e
        try:
            setns(fd)
        finally:
            os.close(fd)
        return env


class CNIServer(socketserver.UnixStreamServer):
    """Accepts on the main thread; a fixed pool of `workers` threads answers the calls."""

    request_queue_size = 128  # a runtime starting many pods at once

    def __init__(self, path: str, workers: int = WORKERS, timeout: float = TIMEOUT):
        self.call_timeout = timeout  # seconds a caller has for its config, and for taking the reply
        self._calls: queue.Queue = queue.Queue(maxsize=workers)  # full: accept waits, callers wait in backlog
        for i in range(workers):  # before the socket appears: who sees it finds the whole pool there
            # daemon: a stuck call must not keep a stopping server alive
            threading.Thread(target=self._work, name=f"labkit-cni-{i}", daemon=True).start()
        super().__init__(path, CallHandler)

    def process_request(self, request, client_address) -> None:
        self._calls.put((request, client_address))

    def _work(self) -> None:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        while True:
            request, client_address = self._calls.get()
            try:
                self.finish_request(request, client_address)
            except Exception:  # noqa: BLE001 - one call's failure must not cost the pool a worker
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)
                setns(home)  # back to the server's namespace before the next caller's


def _clear_stale(path: str) -> None:
    """Remove a socket left by a server that died; refuse a live one and anything that is not a socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SystemExit(f"labkit CNI server: {path} exists and is not a socket; not replacing it "
                         "(remove it yourself or choose another --socket)")
    if is_serving(path):
        raise SystemExit(f"labkit CNI server: {path} is already being served")
    os.unlink(path)


def serve(path: str, *, workers: int = WORKERS, timeout: float = TIMEOUT) -> None:
    """Listen on `path` (owner only) until SIGTERM/SIGINT; remove the socket on the way out.

    Refuses (SystemExit with the reason) when `path` is anything but a missing path or a stale socket.
    """
    _clear_stale(path)
    old = os.umask(0o077)  # the socket is born private: whoever can call it runs the plugin as root
    try:
        server = CNIServer(path, workers, timeout)
    finally:
        os.umask(old)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"labkit CNI server {os.getpid()} serving on {path}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def command(path: str, *options: str) -> list[str]:
    """The argv that runs a server on `path` with this interpreter, without `site` (labkit.lean);
    `options` e.g. "--workers", "2", "--timeout", "1"."""
    from labkit.lean import module_argv

    return module_argv("labkit.cni.server", "--socket", path, *options)


def start(path: str, log: str) -> int:
    """Start a server on `path` in the background, logging to `log`; return its pid at once.

    Nothing waits for it here: until its socket appears, launchers run the plugin in place.
    """
    import subprocess

    with open(log, "ab") as out:
        proc = subprocess.Popen(command(path), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return proc.pid


def is_serving(path: str) -> bool:
    """Whether a server accepts calls on `path` now."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def wait_serving(path: str, pid: int, log: str, timeout: float) -> None:
    """Return once the server `pid` listens on `path`; CNIError with its log's tail if it cannot."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        alive = os.path.exists(f"/proc/{pid}") and _state(pid) != "Z"
        if not alive or time.monotonic() > deadline:
            try:
                with open(log, encoding="utf-8", errors="replace") as fh:
                    tail = fh.read()[-500:].strip()
            except OSError:
                tail = ""
            why = "exited" if not alive else f"is not listening after {timeout:.0f} s"
            raise CNIError(IO_FAILURE, f"the labkit CNI server for {path} {why}", tail or "no log")
        time.sleep(0.005)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "X"


USAGE = "usage: python -m labkit.cni.server --socket PATH [--workers N] [--timeout SECONDS]"


def _options(args: list[str]) -> dict[str, str] | None:
    """--flag value pairs, each at most once; None when anything else is there."""
    if len(args) % 2:
        return None
    found = dict(zip(args[::2], args[1::2], strict=True))
    if len(found) * 2 != len(args) or not set(found) <= {"--socket", "--workers", "--timeout"}:
        return None
    return found


def main(argv: list[str] | None = None) -> int:
    # Three flags: argparse would be a third of this server's start-up, which every cluster lab pays.
    opts = _options(sys.argv[1:] if argv is None else argv)
    try:
        if not opts or not opts.get("--socket"):
            raise ValueError("--socket is required")
        workers = int(opts.get("--workers", WORKERS))
        timeout = float(opts.get("--timeout", TIMEOUT))
        if not 1 <= workers <= 256 or not 0 < timeout <= 3600:  # also refuses nan
            raise ValueError("--workers takes 1 to 256, --timeout more than 0 and at most 3600 seconds")
    except ValueError as e:
        print(f"{USAGE}\n{e}\n{__doc__.splitlines()[0]}", file=sys.stderr)
        return 2
    serve(opts["--socket"], workers=workers, timeout=timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
