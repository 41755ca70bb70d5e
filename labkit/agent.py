"""A tiny network agent, like Kubernetes' agnhost, run from the host's Python.

Nothing has to be in any image: labkit runs this module with the host's
interpreter inside a lab namespace (``nsenter --net=<netns path> python -m
labkit.agent ...``), so it works for pods and nodes of both runtimes.

    python -m labkit.agent serve --tcp 80,8080 --udp 53 [--reply TEXT]
    python -m labkit.agent probe --tcp|--udp HOST PORT [--timeout 1]
    python -m labkit.agent resolve NAME [--nameserver IP] [--search "a b c"] [--ndots 5]
    python -m labkit.agent probe-many  < JSON lines  > JSON lines

``serve`` answers every TCP connection and every UDP datagram with one line
(the reply, by default the hostname) and closes; it prints one JSON line
``{"ready": true, "tcp": [...], "udp": [...]}`` once every socket is bound
(port 0 binds an ephemeral port; the line tells which).

``probe`` exits 0 when the port is open, 1 when it is closed (refused,
unreachable, no reply in time), and prints a one-line reason.

``resolve`` looks a name up the way glibc does with a resolv.conf search list
and ``ndots``: addresses on one line (exit 0), or NXDOMAIN / NODATA / the error
(exit 1).

``probe-many`` reads requests, one JSON object a line, runs them all at once
(a thread each) and writes one JSON result a line as each finishes:

    {"id": 1, "op": "connect", "protocol": "tcp", "host": "web", "port": 80, "timeout": 1,
     "dns": {"nameserver": "10.96.0.10", "search": ["default.svc.cluster.local"], "ndots": 5}}
    {"id": 2, "op": "resolve", "name": "web", "dns": {...}, "timeout": 1}

    {"id": 3, "op": "trace", "protocol": "tcp|udp|icmp", "host": "10.96.0.1", "port": 80,
     "sport": 40001, "tos": 12, "timeout": 1}

`trace` sends ONE packet marked for `labkit trace` (a source port or ICMP id, and an IP TOS)
and waits for its answer, without retrying.

A connect to a name resolves it first (with ``dns``), then tries each address in
order, like ``socket.create_connection``.

Import-light on purpose: the probe path uses the standard library only;
dnspython is imported only when a name has to be resolved.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import threading
import time

# A DNS message with opcode STATUS (2) asking for ".": any DNS server answers it at once
# (NOTIMP or FORMERR) without forwarding it anywhere; `serve` answers it like any datagram.
UDP_PROBE_PAYLOAD = bytes.fromhex("6c6b1000" "0001" "0000" "0000" "0000" "00" "0002" "0001")
BANNER_WAIT = 0.2     # after connecting, how long to wait for a first line from the server
RETRY_EVERY = 0.25    # a new SYN / datagram this often until the timeout


def _ipv4(text: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET, text)
    except (OSError, ValueError):
        return False
    return True


def _fmt_seconds(s: float) -> str:
    return f"{s:g}s"


def _os_reason(exc: OSError, timeout: float) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"timed out after {_fmt_seconds(timeout)}"
    code = exc.errno
    if code == errno.EHOSTUNREACH:
        return "no route to host"
    if code == errno.ENETUNREACH:
        return "network unreachable"
    if code == errno.ECONNRESET:
        return "connection reset"
    if code == errno.EACCES or code == errno.EPERM:
        return "not permitted (filtered)"
    return exc.strerror or str(exc)


# ---------------------------------------------------------------- probes


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    """Connect within `timeout`, sending a fresh SYN every RETRY_EVERY seconds.

    The kernel would resend a lost SYN only after 1 s, which is the whole budget of a
    check; a SYN dropped because a listener's accept queue was full for a moment (a
    small backlog, many probes at once) is thus retried in time. A refusal ends at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        attempt = min(RETRY_EVERY, remaining) if remaining > RETRY_EVERY * 1.5 else remaining
        try:
            return socket.create_connection((host, port), timeout=max(attempt, 0.001))
        except (socket.timeout, TimeoutError):
            if deadline - time.monotonic() <= 0.001:
                raise


def probe_tcp(host: str, port: int, timeout: float = 1.0) -> dict:
    """{"open": bool, "reason": str, "reply": first line the server sent, or None}."""
    try:
        sock = _connect(host, port, timeout)
    except OSError as exc:
        return {"open": False, "reason": _os_reason(exc, timeout), "reply": None}
    reply = None
    try:
        sock.settimeout(min(BANNER_WAIT, timeout))
        data = sock.recv(256)
        if data:
            reply = data.decode("utf-8", "replace").strip().splitlines()[0] if data.strip() else None
    except OSError:
        pass
    finally:
        sock.close()
    return {"open": True, "reason": "connected" + (f" ({reply})" if reply else ""), "reply": reply}


def probe_udp(host: str, port: int, timeout: float = 1.0) -> dict:
    """Open means an answer came back; an ICMP port unreachable or silence means closed.

    The datagram is sent again every RETRY_EVERY seconds until the timeout.
    """
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError as exc:
        return {"open": False, "reason": _os_reason(exc, timeout), "reply": None}
    deadline = time.monotonic() + timeout
    try:
        sock.connect((host, port))
        while True:
            sock.send(UDP_PROBE_PAYLOAD)
            remaining = deadline - time.monotonic()
            sock.settimeout(max(min(RETRY_EVERY, remaining), 0.001))
            try:
                data = sock.recv(4096)
                break
            except (socket.timeout, TimeoutError):
                if deadline - time.monotonic() <= 0.001:
                    return {"open": False, "reason": f"no reply in {_fmt_seconds(timeout)}", "reply": None}
    except ConnectionRefusedError:
        return {"open": False, "reason": "port unreachable", "reply": None}
    except OSError as exc:
        return {"open": False, "reason": _os_reason(exc, timeout), "reply": None}
    finally:
        sock.close()
    text = data.decode("utf-8", "replace").strip()
    reply = text.splitlines()[0] if text and text.isprintable() else None
    return {"open": True, "reason": "reply" + (f" ({reply})" if reply else f" ({len(data)} bytes)"),
            "reply": reply}


def probe(protocol: str, host: str, port: int, timeout: float = 1.0) -> dict:
    return (probe_udp if protocol == "udp" else probe_tcp)(host, port, timeout)


# ---------------------------------------------------------------- one marked probe (labkit trace)


def _marked_socket(kind: int, proto: int, sport: int, tos: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind, proto)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
    if kind != socket.SOCK_RAW:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", sport))
    return sock


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def trace_probe(protocol: str, host: str, port: int, sport: int, tos: int, timeout: float = 1.0) -> dict:
    """ONE packet that `labkit trace` can pick out in every namespace: TCP SYN or UDP datagram from
    source port `sport`, or an ICMP echo request with identifier `sport`, all with IP TOS `tos`.
    Never retried (a retry would be a second packet to trace); the answer, if any, is waited for."""
    started = time.monotonic()
    try:
        if protocol == "icmp":
            sock = _marked_socket(socket.SOCK_RAW, socket.IPPROTO_ICMP, sport, tos)
            body = b"labkit trace"
            header = bytes([8, 0, 0, 0]) + sport.to_bytes(2, "big") + (1).to_bytes(2, "big")
            csum = _checksum(header + body).to_bytes(2, "big")
            sock.sendto(header[:2] + csum + header[4:] + body, (host, 0))
            deadline = started + timeout
            while True:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                data, peer = sock.recvfrom(2048)
                icmp = data[(data[0] & 0x0F) * 4:]
                if icmp[:1] == b"\0" and icmp[4:6] == sport.to_bytes(2, "big"):
                    return {"open": True, "reason": f"echo reply from {peer[0]}"}
                if icmp[:1] in (b"\3", b"\x0b"):  # unreachable / time exceeded about our echo
                    inner = icmp[8:]
                    echo = inner[(inner[0] & 0x0F) * 4:] if inner else b""
                    if echo[4:6] == sport.to_bytes(2, "big"):
                        return {"open": False, "reason": f"ICMP type {icmp[0]} code {icmp[1]} from {peer[0]}"}
        kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
        sock = _marked_socket(kind, 0, sport, tos)
        if protocol == "tcp":
            # one SYN: the kernel's own retransmission waits 1 s, past most traces' budget
            sock.settimeout(timeout)
            sock.connect((host, port))
            sock.close()
            return {"open": True, "reason": "connected"}
        sock.connect((host, port))
        sock.send(UDP_PROBE_PAYLOAD)
        sock.settimeout(timeout)
        data = sock.recv(4096)
        sock.close()
        return {"open": True, "reason": f"reply ({len(data)} bytes)"}
    except ConnectionRefusedError:
        return {"open": False, "reason": "connection refused" if protocol == "tcp" else "port unreachable"}
    except OSError as exc:
        return {"open": False, "reason": _os_reason(exc, timeout)}


# ---------------------------------------------------------------- resolve


def candidates(name: str, search: list[str], ndots: int) -> list[str]:
    """The names glibc's res_search tries, in order (absolute, dot-terminated)."""
    if name.endswith("."):
        return [name]
    search = [s.strip(".") for s in search if s.strip(".")]
    as_is = name + "."
    suffixed = [f"{name}.{s}." for s in search]
    if name.count(".") >= ndots:
        return [as_is] + suffixed
    return suffixed + [as_is]


def _server(nameserver: str) -> tuple[str, int]:
    """`IP` or `IP:PORT` (port 53 by default)."""
    host, _, port = nameserver.partition(":")
    return host, int(port) if port else 53


def _dns_exchange(wire: bytes, nameserver: str, timeout: float) -> bytes:
    """One query over UDP; again over TCP when the answer is truncated."""
    server = _server(nameserver)
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(server)
        resend = 0.0
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError("no answer")
            if now >= resend:   # the query again every 2*RETRY_EVERY, in case one was lost
                sock.send(wire)
                resend = now + 2 * RETRY_EVERY
            sock.settimeout(max(min(resend, deadline) - now, 0.001))
            try:
                data = sock.recv(65535)
            except (socket.timeout, TimeoutError):
                continue
            if data[:2] == wire[:2]:
                break
    if len(data) > 2 and data[2] & 0x02:  # TC
        with socket.create_connection(server, timeout=timeout) as sock:
            sock.sendall(len(wire).to_bytes(2, "big") + wire)
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + int.from_bytes(buf[:2], "big"):
                chunk = sock.recv(65535)
                if not chunk:
                    break
                buf += chunk
            data = buf[2:]
    return data


def query_a(qname: str, nameserver: str, timeout: float = 1.0) -> tuple[str, list[str]]:
    """("NOERROR" | "NXDOMAIN" | "SERVFAIL" | ..., IPv4 addresses in the answer)."""
    import dns.message
    import dns.rcode
    import dns.rdatatype

    query = dns.message.make_query(qname, dns.rdatatype.A)
    data = _dns_exchange(query.to_wire(), nameserver, timeout)
    msg = dns.message.from_wire(data)
    addresses = [rd.address for rrset in msg.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset]
    return dns.rcode.to_text(msg.rcode()), addresses


def resolve(name: str, nameserver: str, search: list[str] | None = None, ndots: int = 1,
            timeout: float = 1.0) -> dict:
    """Resolve like glibc: try each candidate; go on after NXDOMAIN, NODATA and SERVFAIL.

    One deliberate difference: REFUSED (what the cluster DNS answers for a name outside its
    zone when it has no upstream) also goes on, and when some candidate was NXDOMAIN the
    outcome is NXDOMAIN: `nope.default` does not exist, whatever the root servers would say.

    {"status": NOERROR | NXDOMAIN | NODATA | SERVFAIL | REFUSED | TIMEOUT | ERROR,
     "addresses": [...], "name": the name that answered, "tried": [...], "reason": str}
    """
    tried: list[str] = []
    nodata = servfail = nxdomain = False
    refused: list[str] = []
    for qname in candidates(name, search or [], ndots):
        tried.append(qname)
        try:
            rcode, addresses = query_a(qname, nameserver, timeout)
        except (socket.timeout, TimeoutError):
            return {"status": "TIMEOUT", "addresses": [], "name": qname, "tried": tried,
                    "reason": f"no answer from {nameserver} in {_fmt_seconds(timeout)} for {qname}"}
        except Exception as exc:  # noqa: BLE001 - a malformed answer, a refused socket: report, never raise
            reason = _os_reason(exc, timeout) if isinstance(exc, OSError) else str(exc)
            return {"status": "ERROR", "addresses": [], "name": qname, "tried": tried,
                    "reason": f"{nameserver}: {reason}"}
        if rcode == "NOERROR" and addresses:
            return {"status": "NOERROR", "addresses": addresses, "name": qname, "tried": tried,
                    "reason": f"{qname} -> {', '.join(addresses)}"}
        if rcode == "NOERROR":
            nodata = True
        elif rcode == "SERVFAIL":
            servfail = True
        elif rcode == "NXDOMAIN":
            nxdomain = True
        elif rcode == "REFUSED":
            refused.append(qname)
        else:
            return {"status": rcode, "addresses": [], "name": qname, "tried": tried,
                    "reason": f"{qname}: {rcode}"}
    status = ("NODATA" if nodata else "NXDOMAIN" if nxdomain else "SERVFAIL" if servfail
              else "REFUSED" if refused else "NXDOMAIN")
    note = f"; refused: {', '.join(refused)}" if refused and status != "REFUSED" else ""
    return {"status": status, "addresses": [], "name": None, "tried": tried,
            "reason": f"{status} (tried {', '.join(tried)}{note})"}


def read_resolv_conf(path: str = "/etc/resolv.conf") -> dict:
    conf: dict = {"nameserver": None, "search": [], "ndots": 1}
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return conf
    for line in lines:
        words = line.split()
        if not words or words[0].startswith(("#", ";")):
            continue
        if words[0] == "nameserver" and len(words) > 1 and conf["nameserver"] is None:
            conf["nameserver"] = words[1]
        elif words[0] in ("search", "domain"):
            conf["search"] = words[1:]
        elif words[0] == "options":
            for opt in words[1:]:
                if opt.startswith("ndots:") and opt[6:].isdigit():
                    conf["ndots"] = min(int(opt[6:]), 15)
    return conf


# ---------------------------------------------------------------- probe-many


def run_request(req: dict) -> dict:
    """One probe-many request -> its result (never raises)."""
    out: dict = {"id": req.get("id")}
    try:
        timeout = float(req.get("timeout", 1.0))
        dns_conf = req.get("dns") or {}
        if req.get("op") == "resolve":
            if not dns_conf.get("nameserver"):
                return {**out, "status": "ERROR", "addresses": [], "reason": "no nameserver to ask"}
            return {**out, **resolve(str(req["name"]), dns_conf["nameserver"], list(dns_conf.get("search", [])),
                                     int(dns_conf.get("ndots", 1)), timeout)}
        host, port = str(req["host"]), int(req["port"])
        protocol = req.get("protocol", "tcp")
        if req.get("op") == "trace":  # one marked packet to an address (labkit trace)
            return {**out, **trace_probe(protocol, host, port, int(req["sport"]), int(req["tos"]), timeout)}
        addresses = [host]
        if not _ipv4(host):
            if not dns_conf.get("nameserver"):
                return {**out, "open": False, "reason": f"cannot resolve {host}: no nameserver", "addresses": []}
            res = resolve(host, dns_conf["nameserver"], list(dns_conf.get("search", [])),
                          int(dns_conf.get("ndots", 1)), timeout)
            out["resolved"] = res
            if res["status"] != "NOERROR":
                return {**out, "open": False, "reason": f"name not resolved: {res['reason']}", "addresses": []}
            addresses = res["addresses"]
        result: dict = {}
        for address in addresses:
            result = probe(protocol, address, port, timeout)
            result["address"] = address
            if result["open"]:
                break
        return {**out, **result, "addresses": addresses}
    except Exception as exc:  # noqa: BLE001 - bad request: report it as the result
        return {**out, "open": False, "status": "ERROR", "reason": f"agent error: {exc!r}"}


def probe_many(inp=None, out=None) -> int:
    inp = inp or sys.stdin
    out = out or sys.stdout
    lock = threading.Lock()

    def work(req: dict) -> None:
        started = time.monotonic()
        result = run_request(req)
        result["elapsed"] = round(time.monotonic() - started, 4)
        line = json.dumps(result)
        with lock:
            out.write(line + "\n")
            out.flush()

    requests = []
    for line in inp:
        if line.strip():
            try:
                requests.append(json.loads(line))
            except ValueError as exc:
                requests.append({"id": None, "op": "invalid", "error": str(exc)})
    if any(not _ipv4(str(r.get("host", "0.0.0.0"))) or r.get("op") == "resolve" for r in requests):
        try:  # import dnspython once, before the threads race to import it
            import dns.message  # noqa: F401
            import dns.rcode  # noqa: F401
            import dns.rdatatype  # noqa: F401
        except ImportError:
            pass
    threads = [threading.Thread(target=work, args=(r,), daemon=True) for r in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return 0


# ---------------------------------------------------------------- serve


def serve(tcp: list[int], udp: list[int], reply: str | None = None, bind: str = "0.0.0.0",
          ready=None, stop: threading.Event | None = None) -> int:
    """Answer every TCP connection and UDP datagram with `reply` + newline, until `stop` (or forever)."""
    text = ((reply if reply is not None else socket.gethostname()) + "\n").encode()
    tcp_socks, udp_socks = [], []
    try:
        for port in tcp:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((bind, port))
            s.listen(128)
            tcp_socks.append(s)
        for port in udp:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((bind, port))
            udp_socks.append(s)
    except OSError as exc:
        for s in tcp_socks + udp_socks:
            s.close()
        print(f"agent serve: cannot bind: {exc.strerror or exc}", file=sys.stderr)
        return 2

    def answer_tcp(s: socket.socket) -> None:
        while True:
            try:
                conn, _ = s.accept()
            except OSError:
                return
            try:
                conn.sendall(text)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            finally:
                conn.close()

    def answer_udp(s: socket.socket) -> None:
        while True:
            try:
                _, peer = s.recvfrom(65535)
            except OSError:
                return
            if peer is None:  # the socket was shut down
                return
            try:
                s.sendto(text, peer)
            except OSError:
                pass

    for s in tcp_socks:
        threading.Thread(target=answer_tcp, args=(s,), daemon=True).start()
    for s in udp_socks:
        threading.Thread(target=answer_udp, args=(s,), daemon=True).start()
    line = json.dumps({"ready": True, "tcp": [s.getsockname()[1] for s in tcp_socks],
                       "udp": [s.getsockname()[1] for s in udp_socks]})
    (ready or (lambda text_: (print(text_, flush=True))))(line)
    stop = stop or threading.Event()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    for s in tcp_socks + udp_socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()
    return 0


# ---------------------------------------------------------------- command line


def _ports(text: str) -> list[int]:
    ports = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or int(part) > 65535:
            raise SystemExit(f"agent: {part!r} is not a port (0-65535)")
        ports.append(int(part))
    return ports


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m labkit.agent", description="labkit's network agent")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_serve = sub.add_parser("serve", help="answer TCP connections and UDP datagrams with one line")
    p_serve.add_argument("--tcp", default="", help="comma-separated TCP ports")
    p_serve.add_argument("--udp", default="", help="comma-separated UDP ports")
    p_serve.add_argument("--reply", default=None, help="the line to answer with (default: hostname)")
    p_serve.add_argument("--bind", default="0.0.0.0")
    p_serve.add_argument("--until-eof", action="store_true",
                         help="stop when stdin closes (so the agent dies with whoever started it)")
    p_probe = sub.add_parser("probe", help="is HOST PORT open? exit 0 open, 1 closed")
    proto = p_probe.add_mutually_exclusive_group()
    proto.add_argument("--tcp", dest="protocol", action="store_const", const="tcp")
    proto.add_argument("--udp", dest="protocol", action="store_const", const="udp")
    p_probe.add_argument("host")
    p_probe.add_argument("port", type=int)
    p_probe.add_argument("--timeout", type=float, default=1.0)
    p_res = sub.add_parser("resolve", help="resolve NAME like glibc (search list, ndots)")
    p_res.add_argument("name")
    p_res.add_argument("--nameserver", default=None, help="IP or IP:PORT; default: the first in /etc/resolv.conf")
    p_res.add_argument("--search", default=None, help='space-separated domains, e.g. "a b c"')
    p_res.add_argument("--ndots", type=int, default=None)
    p_res.add_argument("--timeout", type=float, default=1.0)
    sub.add_parser("probe-many", help="JSON requests on stdin, JSON results on stdout")
    args = parser.parse_args(argv)

    if args.cmd == "serve":
        tcp, udp = _ports(args.tcp), _ports(args.udp)
        if not tcp and not udp:
            parser.error("serve: give --tcp and/or --udp ports")
        stop = threading.Event()
        if args.until_eof:
            def watch() -> None:
                while sys.stdin.buffer.read(4096):
                    pass
                stop.set()

            threading.Thread(target=watch, daemon=True).start()
        return serve(tcp, udp, args.reply, args.bind, stop=stop)
    if args.cmd == "probe":
        host = args.host
        if not _ipv4(host):
            try:
                host = socket.gethostbyname(host)
            except OSError as exc:
                print(f"closed: cannot resolve {args.host}: {exc}")
                return 1
        result = probe(args.protocol or "tcp", host, args.port, args.timeout)
        print(("open: " if result["open"] else "closed: ") + result["reason"])
        return 0 if result["open"] else 1
    if args.cmd == "resolve":
        conf = read_resolv_conf()
        nameserver = args.nameserver or conf["nameserver"]
        if not nameserver:
            print("no nameserver: give --nameserver")
            return 1
        search = args.search.split() if args.search is not None else conf["search"]
        ndots = args.ndots if args.ndots is not None else conf["ndots"]
        res = resolve(args.name, nameserver, search, ndots, args.timeout)
        if res["status"] == "NOERROR":
            print(" ".join(res["addresses"]))
            return 0
        print(res["status"] if res["status"] in ("NXDOMAIN", "NODATA") else f"{res['status']}: {res['reason']}")
        return 1
    return probe_many()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        os._exit(1)
