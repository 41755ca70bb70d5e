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
    {"id": 4, "op": "ping", "host": "fd00:10:244:1::5", "timeout": 1}
    {"id": 5, "op": "connect", "host": "web", "port": 80, "families": [6, 4], "dns": {...}}

Every address may be IPv4 or IPv6 (a nameserver too: `fd00:10:96::a`, `[fd00:10:96::a]:53`).
A name is looked up for the records of `families` (4: A, 6: AAAA; default [4]), in that order,
and its addresses are tried in that order. `ping` sends ICMP (ICMPv6) echo requests every
RETRY_EVERY seconds until a reply or the timeout.

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


def _ipv6(text: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6, text)
    except (OSError, ValueError):
        return False
    return True


def _is_ip(text: str) -> bool:
    return _ipv4(text) or _ipv6(text)


def _af(host: str) -> int:
    """The socket family for an address: AF_INET6 for an IPv6 address, else AF_INET."""
    return socket.AF_INET6 if _ipv6(host) else socket.AF_INET


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
        sock = socket.socket(_af(host), socket.SOCK_DGRAM)
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


# ---------------------------------------------------------------- ping (ICMP / ICMPv6 echo)

ECHO_REQUEST = {4: 8, 6: 128}
ECHO_REPLY = {4: 0, 6: 129}
# ICMP errors about a packet we sent: destination unreachable, time exceeded (and v6's packet too big)
ICMP_ERRORS = {4: {3: "unreachable", 11: "time exceeded"},
               6: {1: "unreachable", 2: "packet too big", 3: "time exceeded"}}
_ping_ids = iter(range(int.from_bytes(os.urandom(2), "big"), 1 << 30))
_ping_lock = threading.Lock()


def _next_ping_id() -> int:
    """A fresh echo identifier: probes of one agent run at once, each on its own raw socket that sees
    every ICMP message; the identifier tells them apart."""
    with _ping_lock:
        return next(_ping_ids) & 0xFFFF


def _echo(family: int, ident: int, seq: int, body: bytes) -> bytes:
    header = bytes([ECHO_REQUEST[family], 0, 0, 0]) + ident.to_bytes(2, "big") + seq.to_bytes(2, "big")
    if family == 6:  # the kernel fills in an ICMPv6 checksum (it covers the IPv6 pseudo-header)
        return header + body
    csum = _checksum(header + body).to_bytes(2, "big")
    return header[:2] + csum + header[4:] + body


def _icmp_of(family: int, data: bytes) -> bytes:
    """The ICMP message in what a raw socket read: IPv4 raw sockets give the IP header too, IPv6 ones do not."""
    return data[(data[0] & 0x0F) * 4:] if family == 4 and data else data


def _echo_id_in_error(family: int, icmp: bytes) -> bytes:
    """The echo identifier of the packet an ICMP error quotes (b"" if it quotes no echo)."""
    inner = icmp[8:]
    if family == 4:
        echo = inner[(inner[0] & 0x0F) * 4:] if inner else b""
    else:
        echo = inner[40:] if len(inner) > 40 and inner[6] == socket.IPPROTO_ICMPV6 else b""
    return echo[4:6] if echo[:1] == bytes([ECHO_REQUEST[family]]) else b""


def ping(host: str, timeout: float = 1.0, tos: int | None = None, ident: int | None = None,
         retry: bool = True) -> dict:
    """ICMP echo (ICMPv6 for an IPv6 address): {"open": True} on an echo reply, else why not.

    A request goes out every RETRY_EVERY seconds (`retry`) until a reply or `timeout`; an ICMP error
    about one of ours (unreachable, time exceeded) ends it at once."""
    family = 6 if _ipv6(host) else 4
    ident = _next_ping_id() if ident is None else ident
    try:
        sock = socket.socket(_af(host), socket.SOCK_RAW,
                             socket.IPPROTO_ICMPV6 if family == 6 else socket.IPPROTO_ICMP)
    except OSError as exc:
        return {"open": False, "reason": f"cannot open a raw ICMP socket: {_os_reason(exc, timeout)}"}
    want = ident.to_bytes(2, "big")
    deadline = time.monotonic() + timeout
    try:
        if tos is not None:
            if family == 6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tos)
            else:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
        seq, resend = 0, 0.0
        while True:
            now = time.monotonic()
            if now >= deadline:
                return {"open": False, "reason": f"no echo reply in {_fmt_seconds(timeout)}"}
            if now >= resend and (seq == 0 or retry):
                seq += 1
                sock.sendto(_echo(family, ident, seq, b"labkit ping"), (host, 0))
                resend = now + RETRY_EVERY
            sock.settimeout(max(min(resend if retry else deadline, deadline) - now, 0.001))
            try:
                data, peer = sock.recvfrom(2048)
            except (socket.timeout, TimeoutError):
                continue
            icmp = _icmp_of(family, data)
            if icmp[:1] == bytes([ECHO_REPLY[family]]) and icmp[4:6] == want:
                return {"open": True, "reason": f"echo reply from {peer[0]}"}
            what = ICMP_ERRORS[family].get(icmp[0]) if icmp else None
            if what and _echo_id_in_error(family, icmp) == want:
                return {"open": False, "reason": f"ICMP{'v6' if family == 6 else ''} {what} (type {icmp[0]} "
                                                 f"code {icmp[1]}) from {peer[0]}"}
    except OSError as exc:
        return {"open": False, "reason": _os_reason(exc, timeout)}
    finally:
        sock.close()


# ---------------------------------------------------------------- one marked probe (labkit trace)


def _marked_socket(kind: int, proto: int, sport: int, tos: int, family: int = socket.AF_INET) -> socket.socket:
    """A socket whose packets carry IP TOS (IPv6 traffic class) `tos`, bound to source port `sport`."""
    sock = socket.socket(family, kind, proto)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tos)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
    if kind != socket.SOCK_RAW:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", sport))
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
    if _ipv6(host):  # ICMPv6 echo with identifier `sport`, or TCP/UDP from `sport`, traffic class `tos`
        if protocol == "icmp":
            return ping(host, timeout, tos=tos, ident=sport, retry=False)
        return _trace_probe_socket(protocol, host, port, sport, tos, timeout, socket.AF_INET6)
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
    except OSError as exc:
        return {"open": False, "reason": _os_reason(exc, timeout)}
    return _trace_probe_socket(protocol, host, port, sport, tos, timeout, socket.AF_INET)


def _trace_probe_socket(protocol: str, host: str, port: int, sport: int, tos: int, timeout: float,
                        family: int) -> dict:
    """trace_probe's TCP SYN or UDP datagram."""
    try:
        kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
        sock = _marked_socket(kind, 0, sport, tos, family)
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
    """`IP`, `IP:PORT`, an IPv6 address bare or `[IPv6]:PORT` (port 53 by default)."""
    if nameserver.startswith("["):
        host, _, rest = nameserver[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:] else 53
    if _ipv6(nameserver):
        return nameserver, 53
    host, _, port = nameserver.partition(":")
    return host, int(port) if port else 53


def _dns_exchange(wire: bytes, nameserver: str, timeout: float) -> bytes:
    """One query over UDP; again over TCP when the answer is truncated."""
    server = _server(nameserver)
    deadline = time.monotonic() + timeout
    with socket.socket(_af(server[0]), socket.SOCK_DGRAM) as sock:
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


def query(qname: str, nameserver: str, timeout: float = 1.0, family: int = 4) -> tuple[str, list[str]]:
    """("NOERROR" | "NXDOMAIN" | "SERVFAIL" | ..., the addresses in the answer): A records (family 4)
    or AAAA records (family 6)."""
    import dns.message
    import dns.rcode
    import dns.rdatatype

    rdtype = dns.rdatatype.AAAA if family == 6 else dns.rdatatype.A
    message = dns.message.make_query(qname, rdtype)
    data = _dns_exchange(message.to_wire(), nameserver, timeout)
    msg = dns.message.from_wire(data)
    addresses = [rd.address for rrset in msg.answer if rrset.rdtype == rdtype for rd in rrset]
    return dns.rcode.to_text(msg.rcode()), addresses


def query_a(qname: str, nameserver: str, timeout: float = 1.0) -> tuple[str, list[str]]:
    """("NOERROR" | "NXDOMAIN" | "SERVFAIL" | ..., IPv4 addresses in the answer)."""
    return query(qname, nameserver, timeout, 4)


def _query_families(qname: str, nameserver: str, timeout: float, families: list[int]) -> tuple[str, list[str]]:
    """One candidate name asked for each family's records in order (A, then AAAA, ...), as getaddrinfo
    asks for both: the addresses of all, in that order. NXDOMAIN means the name is not there at all,
    so the other types are not asked; the first rcode other than NOERROR is the answer's."""
    found: list[str] = []
    rcode = "NOERROR"
    for family in families:
        code, addresses = query(qname, nameserver, timeout, family)
        if code == "NXDOMAIN":
            return (code, []) if not found else ("NOERROR", found)
        if code != "NOERROR":
            rcode = rcode if found else code
            continue
        found += addresses
    return ("NOERROR", found) if found else (rcode, [])


def resolve(name: str, nameserver: str, search: list[str] | None = None, ndots: int = 1,
            timeout: float = 1.0, families: list[int] | None = None) -> dict:
    """Resolve like glibc: try each candidate; go on after NXDOMAIN, NODATA and SERVFAIL.

    One deliberate difference: REFUSED (what the cluster DNS answers for a name outside its
    zone when it has no upstream) also goes on, and when some candidate was NXDOMAIN the
    outcome is NXDOMAIN: `nope.default` does not exist, whatever the root servers would say.

    {"status": NOERROR | NXDOMAIN | NODATA | SERVFAIL | REFUSED | TIMEOUT | ERROR,
     "addresses": [...], "name": the name that answered, "tried": [...], "reason": str}

    `families`: the records asked for each candidate, in order: [4] (A, the default), [6] (AAAA), [4, 6].
    """
    families = list(families or [4])
    tried: list[str] = []
    nodata = servfail = nxdomain = False
    refused: list[str] = []
    for qname in candidates(name, search or [], ndots):
        tried.append(qname)
        try:
            if families == [4]:
                rcode, addresses = query_a(qname, nameserver, timeout)
            else:
                rcode, addresses = _query_families(qname, nameserver, timeout, families)
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
        families = [int(f) for f in req.get("families") or [4]]
        if req.get("op") == "resolve":
            if not dns_conf.get("nameserver"):
                return {**out, "status": "ERROR", "addresses": [], "reason": "no nameserver to ask"}
            return {**out, **resolve(str(req["name"]), dns_conf["nameserver"], list(dns_conf.get("search", [])),
                                     int(dns_conf.get("ndots", 1)), timeout, families)}
        host = str(req["host"])
        port = 0 if req.get("op") == "ping" else int(req["port"])
        protocol = req.get("protocol", "tcp")
        if req.get("op") == "trace":  # one marked packet to an address (labkit trace)
            return {**out, **trace_probe(protocol, host, port, int(req["sport"]), int(req["tos"]), timeout)}
        addresses = [host]
        if not _is_ip(host):
            if not dns_conf.get("nameserver"):
                return {**out, "open": False, "reason": f"cannot resolve {host}: no nameserver", "addresses": []}
            res = resolve(host, dns_conf["nameserver"], list(dns_conf.get("search", [])),
                          int(dns_conf.get("ndots", 1)), timeout, families)
            out["resolved"] = res
            if res["status"] != "NOERROR":
                return {**out, "open": False, "reason": f"name not resolved: {res['reason']}", "addresses": []}
            addresses = res["addresses"]
        result: dict = {}
        for address in addresses:
            if req.get("op") == "http":  # one HTTP request (labkit verify's `http:` checks)
                result = http_get(address, port, req.get("http") or {}, timeout)
                result["address"] = address
                break
            if req.get("op") == "ping":
                result = ping(address, timeout)
            else:
                result = probe(protocol, address, port, timeout)
            result["address"] = address
            if result["open"]:
                break
        return {**out, **result, "addresses": addresses}
    except Exception as exc:  # noqa: BLE001 - bad request: report it as the result
        return {**out, "open": False, "status": "ERROR", "reason": f"agent error: {exc!r}"}


def http_get(address: str, port: int, spec: dict, timeout: float = 1.0) -> dict:
    """One HTTP/1.1 request (GET unless `method`), `Host` (and for https the SNI name) from `host`;
    the status code and the body's first 4 KiB. Certificates are not verified (a lab's are its own)."""
    import ssl

    host = spec.get("host") or (f"[{address}]" if _ipv6(address) else address)
    path = spec.get("path") or "/"
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except OSError as exc:
        return {"open": False, "reason": _os_reason(exc, timeout)}
    try:
        if spec.get("scheme") == "https":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(sock, server_hostname=spec.get("host") or address)
        head = [f"{spec.get('method') or 'GET'} {path} HTTP/1.1", f"Host: {host}", "Connection: close",
                "User-Agent: labkit-agent"]
        head += [f"{k}: {v}" for k, v in (spec.get("headers") or {}).items()]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        data = b""
        while len(data) < 65536:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (OSError, ssl.SSLError) as exc:
        return {"open": False, "reason": f"HTTP request failed: {exc}"}
    finally:
        sock.close()
    ends = [i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0]  # bare LF too, as curl takes
    cut = min(ends) if ends else len(data)
    header, body = data[:cut], data[cut:].lstrip(b"\r\n")
    first = header.split(b"\n", 1)[0].decode(errors="replace").split()
    if len(first) < 2 or not first[1].isdigit():
        return {"open": True, "http_status": 0, "body": "", "reason": f"not an HTTP answer: {data[:80]!r}"}
    text = body[:4096].decode(errors="replace")
    return {"open": True, "http_status": int(first[1]), "body": text,
            "reason": f"HTTP {first[1]}: {text.strip().splitlines()[0] if text.strip() else '(empty body)'}"}


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
    if any(not _is_ip(str(r.get("host", "0.0.0.0"))) or r.get("op") == "resolve" for r in requests):
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
    also_v6 = bind == "0.0.0.0"  # every address: IPv6 too, on the same ports, where the namespace has IPv6

    def bound(kind: int, address: str, port: int, family: int) -> socket.socket:
        s = socket.socket(family, kind)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
            if kind == socket.SOCK_STREAM:
                s.listen(128)
        except OSError:
            s.close()
            raise
        return s

    try:
        for kind, ports, socks in ((socket.SOCK_STREAM, tcp, tcp_socks), (socket.SOCK_DGRAM, udp, udp_socks)):
            for port in ports:
                first = bound(kind, bind, port, _af(bind))
                socks.append(first)
                if also_v6:
                    try:
                        socks.append(bound(kind, "::", first.getsockname()[1], socket.AF_INET6))
                    except OSError:  # no IPv6 here (disabled), or the port taken on it: IPv4 alone
                        pass
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
    line = json.dumps({"ready": True, "tcp": [s.getsockname()[1] for s in tcp_socks if s.family == _af(bind)],
                       "udp": [s.getsockname()[1] for s in udp_socks if s.family == _af(bind)]})
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
    p_serve.add_argument("--bind", default="0.0.0.0", help="the address to listen on (default: all, IPv4 and IPv6)")
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
        if not _is_ip(host):
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
