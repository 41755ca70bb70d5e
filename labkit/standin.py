"""labkit's stand-in workload: one small process that serves a container's ports as agnhost netexec does.

A container labkit cannot run as written (labkit.k8s.standin decides which, and why) runs this
instead, in the pod's network and UTS namespaces, on the host's Python started bare (`-I -S`,
standard library only: no site, no labkit package beyond this module):

    python -m labkit.standin --pod NS/NAME --container NAME [--tcp 80,443] [--udp 53] [--pidfile FILE]
    python -m labkit.standin launch --state LAB_DIR      (how labkit starts them: see "the launcher")

Every TCP port speaks HTTP, answering like the Kubernetes e2e image agnhost's `netexec`:
`/hostname` (and `/hostName`): the pod's hostname; `/clientip`: the client's `IP:PORT`;
`/echo?msg=TEXT[&code=N]`: TEXT, with status N; `/healthz`: 200; any other path: a plain page
naming the pod, namespace, container and port. Every UDP port answers agnhost's commands
(`hostname`, `echo MSG`, `clientip`, read lowercased as agnhost does), and any other datagram with
the page's first line, so a probe that sends something else still sees the port is served. A TCP
client that sends such a command line instead of an HTTP request gets the same answers.

One thread and one epoll loop serve every port: the process costs what a bare interpreter costs.
Once every socket is bound it writes its pid to `--pidfile` (readiness, and how `down` finds it).
"""

from __future__ import annotations

import _socket
import os
import select
import sys

MAX_REQUEST = 16384  # bytes of request line, headers and body a client may send
MAX_CONNECTIONS = 512  # open TCP connections at once; more are closed on arrival
DATAGRAM = 2048  # agnhost's UDP buffer
REASONS = {200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently", 302: "Found",
           307: "Temporary Redirect", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
           412: "Precondition Failed", 417: "Expectation Failed", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 503: "Service Unavailable"}


class Identity:
    """Who is standing in: what the page and the answers name."""

    def __init__(self, pod: str, container: str) -> None:
        self.namespace, _, self.pod = pod.partition("/")
        self.container = container

    @staticmethod
    def hostname() -> str:
        return _socket.gethostname()  # the pod's: this process lives in its UTS namespace

    def line(self, port: int, protocol: str) -> str:
        return (f"labkit stand-in for pod {self.namespace}/{self.pod}, container {self.container}, "
                f"port {port}/{protocol}")

    def page(self, port: int) -> str:
        return (f"{self.line(port, 'TCP')}\n"
                f"pod: {self.pod}\nnamespace: {self.namespace}\ncontainer: {self.container}\nport: {port}\n"
                f"hostname: {self.hostname()}\n"
                "The container's own program does not run in this lab: labkit serves its declared ports.\n"
                "Try /hostname, /clientip, /echo?msg=TEXT (agnhost netexec's answers).\n")


# ---------------------------------------------------------------- requests


def unquote(text: str) -> str:
    """application/x-www-form-urlencoded decoding ('+' is a space, %XX a byte), as a query is read."""
    data = text.replace("+", " ").encode("utf-8", "surrogateescape")
    if b"%" not in data:
        return data.decode("utf-8", "replace")
    out, i = bytearray(), 0
    while i < len(data):
        if data[i] == 0x25 and _is_hex(data[i + 1:i + 3]):
            out.append(int(data[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(data[i])
            i += 1
    return out.decode("utf-8", "replace")


def _is_hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(c in b"0123456789abcdefABCDEF" for c in pair)


def form(query: str) -> dict[str, str]:
    """The first value of each key of a query string (what Go's FormValue returns)."""
    values: dict[str, str] = {}
    for part in query.split("&"):
        if part:
            key, _, value = part.partition("=")
            values.setdefault(unquote(key), unquote(value))
    return values


def command_reply(text: str, identity: Identity, peer: tuple[str, int], port: int, protocol: str) -> str | None:
    """agnhost's UDP commands: the answer to `text`, or None for anything else."""
    said = text.strip().lower()
    if said == "hostname":
        return identity.hostname()
    if said.startswith("echo "):
        return said.split(" ", 1)[1]
    if said == "clientip":
        return _peer_text(peer)
    return None


def http_answer(method: str, target: str, body: bytes, identity: Identity, peer: tuple[str, int],
                port: int) -> tuple[int, str]:
    """(status, body) for an HTTP request, as agnhost netexec answers it."""
    path, _, query = target.partition("?")
    values = form(query)
    if method == "POST" and body:
        values = {**form(body.decode("utf-8", "replace")), **values}
    if path in ("/hostname", "/hostName"):
        return 200, identity.hostname()
    if path == "/clientip":
        return 200, _peer_text(peer)
    if path == "/healthz":
        return 200, ""
    if path == "/echo":
        code = values.get("code", "")
        if code:
            try:
                status = int(code)
            except ValueError:
                return 200, f"argument 'code' must be an integer or empty, got {code!r}\n"
            return (status if 100 <= status <= 999 else 200), values.get("msg", "")
        return 200, values.get("msg", "")
    return 200, identity.page(port)


def http_response(status: int, text: str, head_only: bool = False) -> bytes:
    body = text.encode("utf-8")
    head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode("ascii")
    return head if head_only else head + body


def respond(data: bytes, identity: Identity, peer: tuple[str, int], port: int) -> bytes | None:
    """The bytes to send for what a TCP client sent so far, or None while the request is incomplete."""
    end = data.find(b"\n")
    if end < 0:
        return http_response(431, "request too large\n") if len(data) >= MAX_REQUEST else None
    first = data[:end].decode("latin-1").strip()
    words = first.split()
    if len(words) != 3 or not words[2].startswith("HTTP/"):
        reply = command_reply(first, identity, peer, port, "TCP")
        return ((reply if reply is not None else identity.line(port, "TCP")) + "\n").encode("utf-8", "replace")
    head_end = data.find(b"\r\n\r\n")
    skip = 4
    if head_end < 0:
        head_end, skip = data.find(b"\n\n"), 2
    if head_end < 0:
        return http_response(431, "request too large\n") if len(data) >= MAX_REQUEST else None
    length = 0
    for line in data[:head_end].split(b"\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return http_response(400, "bad Content-Length\n")
    body = data[head_end + skip:]
    if length > MAX_REQUEST:
        return http_response(431, "request too large\n")
    if len(body) < length:
        return None
    method, target = words[0], words[1]
    status, text = http_answer(method, target, body[:length], identity, peer, port)
    return http_response(status, text, head_only=method == "HEAD")


# ---------------------------------------------------------------- the loop
# _socket and select.epoll rather than socket and selectors: those import enum and collections, which
# cost this process a third more memory and a third more start-up time, for nothing it uses.


def _peer_text(peer: tuple) -> str:
    """`ip:port` as agnhost's clientip writes it (Go's RemoteAddr): `[v6]:port`; an IPv4 client of a
    dual-stack socket (`::ffff:a.b.c.d`) as its IPv4 address."""
    host = peer[0].removeprefix("::ffff:") if peer[0].startswith("::ffff:") and "." in peer[0] else peer[0]
    return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"


def _socket_family() -> tuple[int, str]:
    """(AF_INET6, "::") where the namespace has IPv6: one socket per port then serves both families,
    as a container's server on `::` does; else (AF_INET, "0.0.0.0")."""
    try:
        probe = _socket.socket(_socket.AF_INET6, _socket.SOCK_DGRAM)
    except OSError:
        return _socket.AF_INET, "0.0.0.0"
    try:
        probe.bind(("::", 0))
    except OSError:  # IPv6 disabled in this namespace (a Docker container without it)
        return _socket.AF_INET, "0.0.0.0"
    finally:
        probe.close()
    return _socket.AF_INET6, "::"


def bind(tcp: list[int], udp: list[int], address: str | None = None) -> list[tuple[_socket.socket, str, int]]:
    """A bound socket for every port, listening for TCP: (socket, protocol, port); port 0 takes a free one.
    Without `address`: every address of both families where the namespace has IPv6, else every IPv4 one."""
    family, anywhere = _socket_family() if address is None else (
        _socket.AF_INET6 if ":" in address else _socket.AF_INET, address)
    bound = []
    try:
        for protocol, kind, ports in (("UDP", _socket.SOCK_DGRAM, udp), ("TCP", _socket.SOCK_STREAM, tcp)):
            for port in ports:
                s = _socket.socket(family, kind)
                bound.append((s, protocol, port))
                if family == _socket.AF_INET6:
                    s.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, 0)
                if protocol == "TCP":
                    s.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
                s.bind((anywhere, port))
                if protocol == "TCP":
                    s.listen(128)
    except OSError:
        for s, _, _ in bound:
            s.close()
        raise
    for s, _, _ in bound:
        s.setblocking(False)
    return [(s, protocol, s.getsockname()[1]) for s, protocol, _ in bound]


def serve(listeners: list[tuple[_socket.socket, str, int]], identity: Identity, stop=None) -> None:
    """Answer on every listener until `stop()` returns true (checked every tenth of a second) or forever."""
    poller = select.epoll()
    # fd -> [socket, protocol ("UDP", "TCP": a listener, "CONN": a client), port, buffer, peer]
    watched: dict[int, list] = {}
    for s, protocol, port in listeners:
        watched[s.fileno()] = [s, protocol, port, None, None]
        poller.register(s.fileno(), select.EPOLLIN)
    while stop is None or not stop():
        for fd, _ in poller.poll(0.1 if stop else -1):
            sock, protocol, port, buffer, peer = watched[fd]
            if protocol == "UDP":
                _answer_datagram(sock, identity, port)
            elif protocol == "TCP":
                try:
                    conn_fd, conn_peer = sock._accept()
                except OSError:
                    continue
                conn = _socket.socket(sock.family, _socket.SOCK_STREAM, 0, conn_fd)
                if len(watched) - len(listeners) >= MAX_CONNECTIONS:
                    conn.close()
                    continue
                conn.setblocking(False)
                watched[conn_fd] = [conn, "CONN", port, bytearray(), conn_peer[:2]]
                poller.register(conn_fd, select.EPOLLIN)
            else:
                try:
                    chunk = sock.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    chunk = b""
                if chunk and buffer is None:  # answered already: what the client still sends is dropped
                    continue
                if chunk:
                    buffer += chunk
                    reply = respond(bytes(buffer), identity, peer, port)
                    if reply is None:
                        continue
                    try:
                        sock.sendall(reply)  # a few hundred bytes: the socket buffer takes them at once
                        if len(buffer) >= MAX_REQUEST:
                            # Refused unread: closing now would reset the connection and lose the answer;
                            # read the rest away until the client closes.
                            sock.shutdown(_socket.SHUT_WR)
                            watched[fd][3] = None
                            continue
                    except OSError:
                        pass
                poller.unregister(fd)
                del watched[fd]
                sock.close()
    poller.close()


def _answer_datagram(sock: _socket.socket, identity: Identity, port: int) -> None:
    try:
        data, peer = sock.recvfrom(DATAGRAM)
    except OSError:
        return
    reply = command_reply(data.decode("utf-8", "replace"), identity, peer, port, "UDP")
    try:
        sock.sendto((reply if reply is not None else identity.line(port, "UDP")).encode("utf-8"), peer)
    except OSError:
        pass


def write_pid(path: str) -> None:
    """This process's pid, 0644, replacing the file in one step (a reader never sees half of it)."""
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        os.fchmod(fd, 0o644)
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)
    os.replace(temporary, path)


def _ports(text: str) -> list[int]:
    ports = [int(p) for p in text.split(",") if p]
    if not all(0 < p < 65536 for p in ports):
        raise ValueError(f"ports must be 1-65535, got {text!r}")
    return ports


# ---------------------------------------------------------------- the launcher
# Starting an interpreter per container costs ~10 ms of CPU and ~3 MiB of memory of its own each; a fork
# of one interpreter that has this module loaded costs ~1 ms, and its children share its pages until
# they write them. So labkit starts one launcher per batch of pods (`up`, `apply`) and hands it one
# stand-in a line; the launcher forks each into its pod's namespaces and exits when its input ends.

CLONE_NEWUTS, CLONE_NEWNET = 0x04000000, 0x40000000
NET_BIND_SERVICE = 10  # the one capability a stand-in keeps: ports below 1024
FIELDS = ("net", "uts", "log", "pidfile", "pod", "container", "tcp", "udp")  # a request: these, tab-separated


class _Kernel:
    """setns, and dropping capabilities (Python 3.11's os has neither): loaded once, in the launcher."""

    def __init__(self) -> None:
        import ctypes

        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                        ("inheritable", ctypes.c_uint32)]

        self.ctypes, self.libc = ctypes, ctypes.CDLL(None, use_errno=True)
        self.header, self.data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3
        with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as fh:
            self.last_cap = int(fh.read())

    def _check(self, result: int, what: str) -> None:
        if result != 0:
            err = self.ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    def setns(self, path: str, kind: int) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._check(self.libc.setns(fd, kind), f"enter {path}")
        finally:
            os.close(fd)

    def keep_only(self, cap: int) -> None:
        """Every capability but `cap` gone for good: bounding set, ambient set, then the process's own."""
        for other in range(self.last_cap + 1):
            if other != cap:
                self._check(self.libc.prctl(24, other, 0, 0, 0), "drop a capability")  # PR_CAPBSET_DROP
        self._check(self.libc.prctl(47, 4, 0, 0, 0), "clear ambient capabilities")  # PR_CAP_AMBIENT_CLEAR_ALL
        self.data[0].effective = self.data[0].permitted = 1 << cap
        self._check(self.libc.capset(self.ctypes.byref(self.header), self.data), "capset")


def _stand_in_child(kernel: _Kernel, request: dict[str, str]) -> int:
    """In a forked child: detach, enter the pod's network and UTS namespaces, keep one capability, serve."""
    import signal

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.closerange(3, 1 << 16)  # the launcher's pipes, and anything else it held
    kernel.setns(request["net"], CLONE_NEWNET)
    kernel.setns(request["uts"], CLONE_NEWUTS)
    kernel.keep_only(NET_BIND_SERVICE)
    return main(["--pod", request["pod"], "--container", request["container"], "--tcp", request["tcp"],
                 "--udp", request["udp"], "--pidfile", request["pidfile"]])


def launch() -> int:
    """Read requests from stdin (FIELDS, tab-separated, one a line) until it ends; start each. Only a request
    that cannot be started is answered, with `ERR why` (labkit reads the answers once it has sent them all;
    a stand-in that fails later says why in its log)."""
    import signal

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the children reap themselves; they outlive this process
    kernel = _Kernel()
    for line in sys.stdin:
        values = line.rstrip("\n").split("\t")
        if len(values) != len(FIELDS):
            print(f"ERR a request has {len(FIELDS)} tab-separated fields, got {len(values)}", flush=True)
            continue
        sys.stdout.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            print(f"ERR {values[4]} container {values[5]}: fork: {exc.strerror}", flush=True)
            continue
        if pid == 0:
            code = 1
            try:
                code = _stand_in_child(kernel, dict(zip(FIELDS, values, strict=True)))
            except BaseException as exc:  # noqa: BLE001 - a child never returns into the launcher's loop
                try:
                    os.write(2, f"labkit stand-in: {exc}\n".encode(errors="replace"))
                except OSError:
                    pass
            finally:
                os._exit(code)
    return 0


USAGE = ("usage: python -m labkit.standin --pod NS/NAME --container NAME [--tcp P,..] [--udp P,..] [--pidfile FILE]\n"
         "       python -m labkit.standin launch --state DIR   (requests on stdin)")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["launch"]:
        return launch()  # `--state DIR` names the lab's folder on its command line: how labkit finds it
    opts = {"--pod": "", "--container": "", "--tcp": "", "--udp": "", "--pidfile": ""}
    while args:
        flag = args.pop(0)
        if flag not in opts or not args:
            print(USAGE, file=sys.stderr)
            return 2
        opts[flag] = args.pop(0)
    try:
        tcp, udp = _ports(opts["--tcp"]), _ports(opts["--udp"])
    except ValueError as exc:
        print(f"labkit stand-in: {exc}", file=sys.stderr)
        return 2
    identity = Identity(opts["--pod"], opts["--container"])
    try:
        listeners = bind(tcp, udp)
    except OSError as exc:
        print(f"labkit stand-in for {opts['--pod']} container {opts['--container']}: cannot bind: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 2
    if opts["--pidfile"]:
        write_pid(opts["--pidfile"])
    print(f"labkit stand-in for {opts['--pod']} container {opts['--container']}: serving "
          f"TCP {','.join(map(str, tcp)) or '-'} UDP {','.join(map(str, udp)) or '-'}", flush=True)
    serve(listeners, identity)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
