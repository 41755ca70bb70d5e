"""labkit's cluster DNS server: serves a `records.RecordSet` over UDP and TCP.

    python -m labkit.dns.server --config dns.json --listen 10.244.1.5 [--listen fd00:10:244:1::5]
                                [--port 53] [--workers N] [--pidfile FILE]

`--listen` once per address (a dual-stack DNS pod: its IPv4 and its IPv6 address; the
proxy DNATs the kube-dns Service's ClusterIP of each family to the pod's address of that
family). Every address is served over UDP and TCP by every worker.

Process model: a supervisor binds the sockets (so a bad address fails at once, with a
message and exit code 1; a bad config exits 2), then forks N workers (default:
`default_workers()`, one per two CPUs; when that is one, the process serves alone, with no
supervisor: one interpreter per DNS pod). Each worker owns one UDP socket per address (SO_REUSEPORT,
bound to the same address) and shares the TCP listening sockets; the first address's UDP loop
runs in the worker's main thread, any other's in a thread of its own. SIGHUP: every worker re-reads the config file and
swaps its tables (a bad file is logged and the old records kept). SIGTERM/SIGINT: the
supervisor stops the workers and exits 0; workers also die with the supervisor
(PR_SET_PDEATHSIG), so none is ever orphaned.

Speed: responses are precomputed in wire format. The UDP loop first looks the whole
query but its ID up (the shapes stub resolvers send: RD or not, AD or not, no EDNS or a
bare OPT) and sends ID + stored response. Failing that, it finds the end of the name,
looks up the question's bytes (name lowercased, type, class) and glues ID + header tail
+ the query's own question (echoing its case) + body. Anything else (DO bit, EDNS
options, odd headers, names not yet cached, malformed packets, names outside the zone)
takes the slow path, which parses properly and caches what it computed.

Bounds (a pod may send anything, as fast as it likes; the server runs as root on the
host): answers computed on the slow path are kept in a cache of MAX_DYNAMIC entries,
the oldest evicted first, and shared negative answers in a memo of MAX_MEMO; learnt
query shapes are reset after MAX_LEARNT. A UDP answer never exceeds our own EDNS size
(1232, the DNS flag day value, whatever size the client advertises) nor 512 bytes
without EDNS: beyond that it is truncated (TC) and the client retries over TCP. `ANY`
gets the minimal answer of RFC 8482. TCP: at most MAX_TCP_CONNECTIONS connections per
worker and MAX_TCP_PER_CLIENT from one address; a connection is closed when it stays
idle for TCP_IDLE_TIMEOUT between messages, or when a message (its 2-byte length and
its bytes, from the first byte on) takes longer than TCP_MESSAGE_TIMEOUT to arrive.

Names outside the zone go to the upstreams (UDP; SERVFAIL when none answers in
`upstream_timeout`), or are REFUSED when there are none. ExternalName CNAMEs to outside
names are completed through the upstreams, as CoreDNS does.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence

from labkit.dns import records as R
from labkit.dns import wire as W

# Precomputed at load for every name (what getaddrinfo asks); every other answer for a
# name of the zone is computed on first use and kept.
EAGER_QTYPES = (R.A, R.AAAA)
MAX_DYNAMIC = 10000          # slow-path answers kept (NXDOMAIN, NODATA, SRV...), oldest evicted
MAX_MEMO = 4096              # shared negative answers kept, oldest evicted
MAX_TCP_CONNECTIONS = 128    # per worker
MAX_TCP_PER_CLIENT = 8       # per worker, from one client address
MAX_PENDING = 8192           # queries waiting for an upstream, per worker
TCP_IDLE_TIMEOUT = 10.0      # between two messages of a connection
TCP_MESSAGE_TIMEOUT = 5.0    # a whole message (2-byte length and bytes), from its first byte; sending the answer
UDP_SIZE = W.EDNS_UDP_SIZE   # the largest UDP answer sent, whatever size the client advertises
_NEVER_FITS = 1 << 17        # an entry's EDNS size when its full answer exceeds UDP_SIZE
AXFR, IXFR = 252, 251
_QD1 = b"\x00\x01\x00\x00\x00\x00"
_OPT_HEAD = b"\x00\x00\x29"
_OPT_TTLS = (b"\x00\x00\x00\x00", b"\x00\x00\x80\x00")    # EDNS version 0, DO clear/set
_OPT_DO = W.opt_rr(do=True)

_supervisor_pid = 0


def log(msg: str) -> None:
    try:
        sys.stderr.write(f"labkit-dns[{os.getpid()}]: {msg}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


_last_error = [0.0, 0]


def log_query_error(msg: str) -> None:
    """At most one line a second: a flood of bad input must not flood the log."""
    now = time.monotonic()
    if now - _last_error[0] >= 1.0:
        more = f" (+{_last_error[1]} more)" if _last_error[1] else ""
        _last_error[:] = [now, 0]
        log(msg + more)
    else:
        _last_error[1] += 1


# ----------------------------------------------------------------------- tables

# An entry: what the hot path and the slow path glue a response from.
# 0: UDP no-EDNS header tails (rd0, rd1)   1: its body (already truncated if > 512)
# 2: EDNS header tails                      3: EDNS body (ends with our OPT RR)
# 4: size of the full EDNS response (_NEVER_FITS when over UDP_SIZE: always truncated over UDP)
#                                           5: truncated EDNS header tails
# 6: truncated EDNS body                    7: TCP header tails    8: TCP body


class LRU(OrderedDict):
    """A dict of at most `cap` items: setting one more evicts the least recently set or
    got. (Slow-path only: the hot path reads plain dicts.) A worker's UDP loop and TCP
    threads share it: a key another thread evicted meanwhile is no error."""

    def __init__(self, cap: int):
        super().__init__()
        self.cap = cap

    def get(self, key, default=None):
        value = super().get(key, default)
        if value is not default:
            try:
                self.move_to_end(key)
            except KeyError:
                pass
        return value

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        try:
            self.move_to_end(key)
            while len(self) > self.cap:
                self.popitem(last=False)
        except KeyError:
            pass


def make_entry(qwire: bytes, answer: R.Answer, ra: bool, aa: bool = True,
               memo: dict | None = None) -> tuple:
    # Negative answers (nothing, or only the SOA) are the same bytes for every question
    # of the same length whose last labels, as many as the SOA's longest name has, are
    # the same: compression can only point into those. Share them.
    key = None
    if memo is not None and not answer.answer and not answer.additional and all(
            rr[1] == R.SOA for rr in answer.authority):
        depth = max((name.count(".") for rr in answer.authority
                     for name in (rr[0], rr[3][0], rr[3][1])), default=0)
        suffix = tuple(W.wire_labels(qwire)[-depth:]) if depth else ()
        key = (answer.rcode, len(qwire), ra, aa, tuple(answer.authority), suffix)
        hit = memo.get(key)
        if hit is not None:
            return hit
    udp, edns, tc, full = W.make_variants(qwire, answer, ra=ra, aa=aa)
    entry = (udp.hdr, udp.body, edns.hdr, edns.body, edns.size if edns.size <= UDP_SIZE else _NEVER_FITS,
             tc.hdr, tc.body, full.hdr, full.body)
    if key is not None:
        memo[key] = entry
    return entry


# The query shapes stub resolvers send most, whole but for the ID: RD set, AD clear
# (glibc, musl, dnsperf) or set (dig), one question, no EDNS. Other clean shapes (a bare
# OPT, RD clear) are learnt by the hot path on first use.
_EXACT_HEADS = (b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00",
                b"\x01\x20\x00\x01\x00\x00\x00\x00\x00\x00")
MAX_LEARNT = 20000           # learnt whole-query shapes before the table is reset


def exact_variants(question: bytes, entry: tuple) -> list[tuple[bytes, bytes]]:
    """(query bytes after the ID, response bytes after the ID) for the commonest query
    shapes of a lowercase `question`: the hot path's first and cheapest lookup."""
    tail = entry[0][1] + question + entry[1]
    return [(head + question, tail) for head in _EXACT_HEADS]


class State:
    """The worker's current records and response tables (updated in place on reload:
    the UDP loop holds references to these very dicts)."""

    def __init__(self, config_path: str, max_dynamic: int = MAX_DYNAMIC, max_memo: int = MAX_MEMO):
        self.config_path = config_path
        self.rs: R.RecordSet | None = None
        self.entries: dict[bytes, tuple] = {}     # lowercase question -> entry
        self.exact: dict[bytes, bytes] = {}       # whole query but ID -> response but ID
        self.exact_base: dict[bytes, bytes] = {}  # what `exact` is reset to
        self.max_dynamic = max_dynamic
        self.max_memo = max_memo
        self.dynamic: OrderedDict[bytes, None] = OrderedDict()   # the keys of `entries` the slow path added
        self.gen = 0
        self.ra = False
        self.memo: LRU = LRU(max_memo)
        self.text: str | None = None

    def load(self) -> bool:
        """(Re)read the config file; False if its content is what is loaded already
        (a burst of SIGHUPs costs one rebuild). Raises ConfigError, keeping the old
        records, if the file is bad."""
        try:
            with open(self.config_path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise R.ConfigError([f"cannot read: {e.strerror}"], self.config_path) from None
        if text == self.text:
            return False
        cfg = R.DnsConfig.from_json(text, self.config_path)
        serial = cfg.serial or _file_serial(self.config_path)
        rs = R.build_records(cfg, serial=serial)
        ra = bool(rs.upstreams)
        memo = LRU(self.max_memo)
        new = build_entries(rs, ra, memo)
        exact = {}
        for question, entry in new.items():
            exact.update(exact_variants(question, entry))
        # rs before gen: a thread that sees the new gen also sees the new records.
        self.rs = rs
        self.ra = ra
        self.gen += 1
        self.memo = memo
        self.entries.clear()
        self.entries.update(new)
        self.exact_base = exact
        self.reset_exact()
        self.dynamic = OrderedDict()
        self.text = text
        return True

    def reset_exact(self) -> None:
        self.exact.clear()
        self.exact.update(self.exact_base)

    def remember(self, key: bytes, entry: tuple, gen: int) -> None:
        """Keep what the slow path computed, at most `max_dynamic` answers: a query
        stream is an unbounded set of names (NXDOMAIN for search-path guesses, random
        labels, every type of every name), so the oldest is evicted. (Learnt query
        shapes pointing at an evicted answer stay right; `exact` has its own bound.)"""
        if gen != self.gen:
            return
        dynamic = self.dynamic
        self.entries[key] = entry     # first: what is evicted from `dynamic` leaves `entries` too
        try:
            dynamic[key] = None
            dynamic.move_to_end(key)
            while len(dynamic) > self.max_dynamic:
                old, _ = dynamic.popitem(last=False)
                self.entries.pop(old, None)
        except KeyError:    # the TCP threads share this: another one evicted meanwhile
            pass

    def touch(self, key: bytes) -> None:
        """A slow-path hit: keep the answer longest."""
        if key in self.dynamic:  # not a precomputed answer
            try:
                self.dynamic.move_to_end(key)
            except KeyError:   # evicted by another thread meanwhile
                pass


def _file_serial(path: str) -> int:
    try:
        return int(os.stat(path).st_mtime) & 0xFFFFFFFF
    except OSError:
        return int(time.time()) & 0xFFFFFFFF


def build_entries(rs: R.RecordSet, ra: bool, memo: dict) -> dict[bytes, tuple]:
    """A and AAAA for every name that has addresses or is an alias, PTR for every
    reverse name; the rest is computed on first use."""
    entries: dict[bytes, tuple] = {}
    tails = [(qtype, struct.pack("!HH", qtype, 1)) for qtype in EAGER_QTYPES]
    for name, node in rs.nodes.items():
        if not (R.A in node or R.AAAA in node or R.CNAME in node):
            continue
        qwire = W.name_to_wire(name)
        for qtype, tail in tails:
            ans = rs.lookup(name, qtype)
            if ans.chase is not None and rs.upstreams:
                continue
            entries[qwire + tail] = make_entry(qwire, ans, ra, memo=memo)
    for name in rs.reverse:
        qwire = W.name_to_wire(name)
        entries[qwire + b"\x00\x0c\x00\x01"] = make_entry(qwire, rs.lookup(name, R.PTR), ra)
    return entries


# ----------------------------------------------------------------------- slow path


class Upstream:
    """A question the slow path cannot answer alone: `wire` is the query to send to the
    upstreams (the client's own, or for a CNAME `chase`, ours for the target name)."""

    __slots__ = ("q", "wire", "question", "chase")

    def __init__(self, q: W.Query, wire: bytes, chase: R.Answer | None = None):
        self.q = q
        self.wire = wire
        self.chase = chase
        end = wire.find(b"\x00", 12)
        self.question = wire[12:end + 5].lower()


def answer_query(state: State, data: bytes, tcp: bool):
    """Bytes to send, None to drop, or an `Upstream` to ask."""
    try:
        q = W.parse_query(data)
    except W.FormatError as e:
        q = e.args[1] if len(e.args) > 1 else None
        if q is None:
            return None
        return W.error_response(q, R.FORMERR, with_question=False, ra=state.ra)
    if q is None:
        return None
    if q.opcode != 0:
        return W.error_response(q, R.NOTIMP, with_question=False, ra=state.ra)
    if q.edns is not None and q.edns[2] != 0:
        return W.error_response(q, W.BADVERS, with_question=True, ra=state.ra)
    if q.qclass != 1 or q.qtype in (AXFR, IXFR) or q.qtype == R.OPT:
        return W.error_response(q, R.REFUSED, with_question=True, ra=state.ra)
    gen = state.gen
    rs = state.rs
    key = q.question.lower()
    entry = state.entries.get(key) if key[-4:] == q.question[-4:] else None
    if entry is None:
        qwire = q.question[:-4]
        ans = rs.lookup(q.qname, q.qtype)
        if ans.outside:
            if rs.upstreams:
                return Upstream(q, data)
            entry = make_entry(qwire, R.Answer(R.REFUSED), state.ra, aa=False,
                               memo=state.memo)
        elif ans.chase is not None and rs.upstreams:
            # An ExternalName: like CoreDNS, complete the CNAME with the target's
            # records from upstream (stub resolvers do not chase CNAMEs themselves).
            return Upstream(q, W.make_query(ans.chase, q.qtype), ans)
        else:
            entry = make_entry(qwire, ans, state.ra, memo=state.memo)
        if key[-4:] == q.question[-4:]:
            state.remember(key, entry, gen)
    else:
        state.touch(key)
    return assemble(q, entry, tcp)


def assemble(q: W.Query, entry: tuple, tcp: bool) -> bytes:
    rd = q.rd
    if q.edns is None:
        hdr, body = (entry[7], entry[8]) if tcp else (entry[0], entry[1])
    elif tcp or entry[4] <= q.edns[0]:
        hdr, body = entry[2], entry[3]
    else:
        hdr, body = entry[5], entry[6]
    if q.edns is not None and q.edns[3]:
        body = body[:-11] + W.opt_rr(do=True)      # RFC 3225: copy the DO bit
    return q.id + hdr[rd] + q.question + body


def udp_limit(q: W.Query) -> int:
    """The largest UDP response for `q`: its EDNS size (at least 512) but at most ours."""
    return 512 if q.edns is None else min(q.edns[0], UDP_SIZE)


def truncated(q: W.Query, resp: bytes) -> bytes:
    """`resp` (an upstream's, too large for UDP) as TC=1 with only the question (and our
    OPT): the client asks again over TCP."""
    opt = b"" if q.edns is None else W.opt_rr(do=q.edns[3])
    return (q.id + bytes((resp[2] | 0x02, resp[3])) + struct.pack("!HHHH", 1, 0, 0, 1 if opt else 0)
            + q.question + opt)


def upstream_reply(state: State, up: Upstream, resp: bytes | None, tcp: bool) -> bytes:
    """The client's response from the upstream's (`resp` with any ID; None: no upstream
    answered)."""
    q = up.q
    if up.chase is None:
        if resp is None:
            return W.error_response(q, R.SERVFAIL, with_question=True, ra=state.ra)
        if not tcp and len(resp) > udp_limit(q):
            return truncated(q, resp)
        return q.id + resp[2:]
    rcode, rrs = R.NOERROR, []
    if resp is not None:
        try:
            rcode, rrs = W.parse_answer(resp)
        except (W.FormatError, struct.error, ValueError):
            rcode, rrs = R.NOERROR, []
    if rcode not in (R.NOERROR, R.NXDOMAIN):
        rcode, rrs = R.NOERROR, []
    full = R.Answer(rcode, up.chase.answer + rrs)
    try:
        entry = make_entry(q.question[:-4], full, state.ra)
    except (ValueError, UnicodeError):
        entry = make_entry(q.question[:-4], up.chase, state.ra)
    return assemble(q, entry, tcp)


# ----------------------------------------------------------------------- forwarding


class Forwarder:
    """Relays UDP queries for names outside the zone to the upstreams, in order, each
    tried for upstream_timeout/len(upstreams); SERVFAIL when all stay silent."""

    def __init__(self, state: State, reply_sock: socket.socket):
        self.state = state
        self.reply_sock = reply_sock
        self.socks: dict[int, socket.socket] = {}
        self.pending: dict[int, list] = {}
        self.lock = threading.Lock()
        self.next_id = int.from_bytes(os.urandom(2), "big")
        self.thread: threading.Thread | None = None

    def _sock(self, family: int) -> socket.socket:
        s = self.socks.get(family)
        if s is None:
            s = socket.socket(family, socket.SOCK_DGRAM)
            s.setblocking(False)
            self.socks[family] = s
        return s

    def submit(self, up: Upstream, addr) -> None:
        if self.thread is None:
            self.thread = _start_thread(self._run)
        self._send(up, addr, 0)

    def _send(self, up: Upstream, addr, attempt: int) -> None:
        rs = self.state.rs
        ups = rs.upstreams
        if attempt >= len(ups):
            self._reply(upstream_reply(self.state, up, None, tcp=False), addr)
            return
        host, port = ups[attempt]
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with self.lock:
            full = len(self.pending) >= MAX_PENDING
            if not full:
                while True:
                    self.next_id = (self.next_id + 1) & 0xFFFF
                    if self.next_id not in self.pending:
                        break
                fid = self.next_id
                deadline = time.monotonic() + rs.upstream_timeout / len(ups)
                self.pending[fid] = [up, addr, attempt, deadline, (host, port)]
        if full:
            # Overloaded: fail fast rather than queue what the upstreams cannot take.
            self._reply(upstream_reply(self.state, up, None, tcp=False), addr)
            return
        try:
            self._sock(family).sendto(fid.to_bytes(2, "big") + up.wire[2:], (host, port))
        except OSError:
            with self.lock:
                self.pending.pop(fid, None)
            self._send(up, addr, attempt + 1)

    def _reply(self, resp: bytes, addr) -> None:
        try:
            self.reply_sock.sendto(resp, addr)
        except OSError:
            pass

    def _run(self) -> None:
        while True:
            try:
                self._step()
            except Exception as e:   # noqa: BLE001 - never let the relay die
                log(f"forward error: {e!r}")

    def _step(self) -> None:
        socks = list(self.socks.values())
        try:
            ready, _, _ = select.select(socks, [], [], 0.05)
        except (OSError, ValueError):
            ready = []
        for s in ready:
            while True:
                try:
                    resp, src = s.recvfrom(65535)
                except OSError:
                    break
                if len(resp) < 12:
                    continue
                fid = int.from_bytes(resp[:2], "big")
                with self.lock:
                    p = self.pending.get(fid)
                    if p is None or (src[0], src[1]) != p[4]:
                        continue
                    up = p[0]
                    # The answer must be to our question (case-insensitively).
                    if resp[12:12 + len(up.question)].lower() != up.question:
                        continue
                    del self.pending[fid]
                self._reply(upstream_reply(self.state, up, resp, tcp=False), p[1])
        now = time.monotonic()
        with self.lock:
            expired = [(k, p) for k, p in self.pending.items() if p[3] <= now]
            for k, _ in expired:
                del self.pending[k]
        for _, p in expired:
            self._send(p[0], p[1], p[2] + 1)


def ask_upstreams(state: State, up: Upstream) -> bytes | None:
    """For TCP clients: ask each upstream in turn over UDP (over TCP if the answer is
    truncated); None if none answers."""
    rs = state.rs
    each = rs.upstream_timeout / max(1, len(rs.upstreams))
    data = up.wire
    for host, port in rs.upstreams:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        fid = os.urandom(2)
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((host, port))
                s.send(fid + data[2:])
                deadline = time.monotonic() + each
                while True:
                    s.settimeout(max(0.001, deadline - time.monotonic()))
                    resp = s.recv(65535)
                    if (resp[:2] == fid and len(resp) >= 12
                            and resp[12:12 + len(up.question)].lower() == up.question):
                        break
            if resp[2] & 0x02:
                with socket.create_connection((host, port), timeout=each) as t:
                    t.sendall(len(data).to_bytes(2, "big") + fid + data[2:])
                    n = int.from_bytes(_recv_exact(t, 2), "big")
                    resp = _recv_exact(t, n)
            return resp
        except (OSError, ValueError, EOFError):
            continue
    return None


# ----------------------------------------------------------------------- serving


def _start_thread(target, *args) -> threading.Thread:
    """A daemon thread that never receives the process's signals (they must reach the
    main thread, which then leaves its blocking recvfrom at once)."""
    sigs = {signal.SIGHUP, signal.SIGTERM, signal.SIGINT}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return t


def serve_udp(state: State, sock: socket.socket) -> None:
    recvfrom = sock.recvfrom
    sendto = sock.sendto
    exact_table = state.exact
    exact = exact_table.get
    get = state.entries.get
    forwarder = Forwarder(state, sock)
    join = b"".join
    while True:
        try:
            data, addr = recvfrom(4096)
        except OSError:
            continue
        try:
            # 1. the whole query (but its ID) is one we know: one lookup, one concat
            tail = exact(data[2:])
            if tail is not None:
                sendto(data[:2] + tail, addr)
                continue
            # 2. a known question, with another header, letter case or EDNS
            end = data.find(b"\x00", 12)
            q = data[12:end + 5]
            ent = get(q.lower())
            if ent is not None and data[4:10] == _QD1 and not data[2] & 0xF8:
                n = len(data)
                out = None
                if n == end + 5:
                    if data[10:12] == b"\x00\x00":
                        out = join((data[:2], ent[0][data[2] & 1], q, ent[1]))
                elif (data[10:12] == b"\x00\x01" and data[end + 5:end + 8] == _OPT_HEAD
                      and data[end + 10:end + 14] in _OPT_TTLS
                      and n == end + 16 + (data[end + 14] << 8 | data[end + 15])):
                    if ent[4] > 512 and ent[4] > (data[end + 8] << 8 | data[end + 9]):
                        hdr, body = ent[5], ent[6]
                    else:
                        hdr, body = ent[2], ent[3]
                    if data[end + 12]:
                        body = body[:-11] + _OPT_DO     # RFC 3225: copy the DO bit
                    out = join((data[:2], hdr[data[2] & 1], q, body))
                    if n != end + 16:
                        sendto(out, addr)          # EDNS options: not worth learning
                        continue
                if out is not None:
                    sendto(out, addr)
                    # learn this shape for step 1 (bounded)
                    if len(exact_table) >= MAX_LEARNT + len(state.exact_base):
                        state.reset_exact()
                    exact_table[data[2:]] = out[2:]
                    continue
            # 3. everything else: parse
            resp = answer_query(state, data, tcp=False)
            if resp is None:
                continue
            if type(resp) is Upstream:
                forwarder.submit(resp, addr)
                continue
            sendto(resp, addr)
        except OSError:
            pass
        except Exception as e:  # noqa: BLE001 - the server never dies on input
            log_query_error(f"error on query from {addr}: {e!r}")


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def _recv_by(conn: socket.socket, buf: bytes, n: int, deadline: float) -> bytes:
    """`buf` completed to `n` bytes, all of them by `deadline` (however they trickle in)."""
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        conn.settimeout(left)
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def read_message(conn: socket.socket, idle: float = TCP_IDLE_TIMEOUT,
                 budget: float = TCP_MESSAGE_TIMEOUT) -> bytes | None:
    """The next DNS message of a TCP connection; None when the client is done. The
    message may take `idle` to begin, then `budget` for its length and bytes: one byte
    every few seconds cannot hold a connection."""
    conn.settimeout(idle)
    first = conn.recv(2)
    if not first:
        return None
    deadline = time.monotonic() + budget
    hdr = _recv_by(conn, first, 2, deadline)
    return _recv_by(conn, b"", int.from_bytes(hdr, "big"), deadline)


class TcpLimits:
    """Admission of TCP connections: at most `total` at once, `per_client` from one
    address (so one pod cannot take every slot)."""

    def __init__(self, total: int = MAX_TCP_CONNECTIONS, per_client: int = MAX_TCP_PER_CLIENT):
        self.total = total
        self.per_client = per_client
        self.active = 0
        self.clients: dict[str, int] = {}
        self.lock = threading.Lock()

    def admit(self, client: str) -> bool:
        with self.lock:
            n = self.clients.get(client, 0)
            if self.active >= self.total or n >= self.per_client:
                return False
            self.clients[client] = n + 1
            self.active += 1
            return True

    def release(self, client: str) -> None:
        with self.lock:
            self.active -= 1
            n = self.clients.pop(client) - 1
            if n:
                self.clients[client] = n


def serve_tcp(state: State, lsock: socket.socket, limits: TcpLimits | None = None) -> None:
    """Accept connections on `lsock` for ever (`limits`: shared by a worker's listening sockets)."""
    limits = limits or TcpLimits()

    def connection(conn: socket.socket, client: str) -> None:
        try:
            while True:
                try:
                    msg = read_message(conn)
                except (OSError, EOFError):
                    return
                if msg is None:
                    return
                try:
                    resp = answer_query(state, msg, tcp=True)
                    if type(resp) is Upstream:
                        resp = upstream_reply(state, resp, ask_upstreams(state, resp), True)
                except Exception as e:  # noqa: BLE001
                    log_query_error(f"error on TCP query: {e!r}")
                    return
                if resp is None or len(resp) > 0xFFFF:
                    return
                conn.settimeout(TCP_MESSAGE_TIMEOUT)   # a client that does not read is let go
                conn.sendall(len(resp).to_bytes(2, "big") + resp)
        except Exception:  # noqa: BLE001 - a connection's trouble ends only it
            pass
        finally:
            conn.close()
            limits.release(client)

    while True:
        try:
            conn, addr = lsock.accept()
        except OSError:
            time.sleep(0.01)
            continue
        client = addr[0]
        if not limits.admit(client):
            conn.close()
            continue
        try:
            threading.Thread(target=connection, args=(conn, client), daemon=True).start()
        except RuntimeError:
            conn.close()
            limits.release(client)


# ----------------------------------------------------------------------- processes

_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}


def _die_with_parent() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != _supervisor_pid:
        os._exit(0)


def worker_main(state: State, udps: list[socket.socket], tcps: list[socket.socket],
                alone: str | None = None) -> None:
    """A worker's life: a UDP socket and a TCP listening socket per address. `alone`: the server is this
    one process (no supervisor): SIGTERM/SIGINT remove the pid file named (if any) and exit 0, and no
    parent's death ends it."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    if alone is not None:
        def on_stop(signum, frame) -> None:
            if alone:
                try:
                    os.unlink(alone)
                except OSError:
                    pass
            os._exit(0)

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)

    def on_hup(signum, frame) -> None:
        try:
            if state.load():
                log(f"reloaded {state.config_path}")
        except R.ConfigError as e:
            log(f"reload failed, keeping the previous records:\n{e}")
        except Exception as e:  # noqa: BLE001
            log(f"reload failed, keeping the previous records: {e!r}")

    signal.signal(signal.SIGHUP, on_hup)
    if alone is None:
        _die_with_parent()
    limits = TcpLimits()      # per worker, whichever address a client connects to
    for tcp in tcps:
        _start_thread(serve_tcp, state, tcp, limits)     # signals still blocked: inherited
    for udp in udps[1:]:
        _start_thread(serve_udp, state, udp)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    serve_udp(state, udps[0])   # the main thread's: signals interrupt it


def _spread_evenly(sock: socket.socket, n: int) -> None:
    """Pick the worker of each datagram at random rather than by the 4-tuple hash, so
    that one busy client (one source port) still uses every worker. A classic BPF
    program on the SO_REUSEPORT group: `ld rand; mod #n; ret a`. Best effort: without
    it the kernel's hash is used."""
    try:
        import ctypes

        insns = struct.pack("=HBBI", 0x20, 0, 0, (0xFFFFF000 + 56) & 0xFFFFFFFF)  # ld rand
        insns += struct.pack("=HBBI", 0x94, 0, 0, n)                               # mod #n
        insns += struct.pack("=HBBI", 0x16, 0, 0, 0)                               # ret a
        buf = ctypes.create_string_buffer(insns, len(insns))
        prog = struct.pack("@HP", 3, ctypes.addressof(buf))
        sock.setsockopt(socket.SOL_SOCKET, 51, prog)   # SO_ATTACH_REUSEPORT_CBPF
    except (OSError, ImportError, struct.error) as e:
        log(f"SO_ATTACH_REUSEPORT_CBPF unavailable ({e}); spreading by address hash")


TENTATIVE_WAIT = 3.0  # seconds an IPv6 address may stay tentative (DAD) before binding it fails


def _bind_one(s: socket.socket, address: tuple[str, int]) -> None:
    """Bind; an IPv6 address still tentative (duplicate address detection: EADDRNOTAVAIL
    for a second or so after it was added without `nodad`) is waited for."""
    deadline = time.monotonic() + (TENTATIVE_WAIT if s.family == socket.AF_INET6 else 0)
    while True:
        try:
            s.bind(address)
            return
        except OSError as e:
            if e.errno != errno.EADDRNOTAVAIL or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def _socket(family: int, kind: int) -> socket.socket:
    s = socket.socket(family, kind)
    if family == socket.AF_INET6:   # this address only, never v4-mapped ones
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return s


def _bind(listens: list[str], port: int, workers: int) -> tuple[list[list[socket.socket]], list[socket.socket]]:
    """Per worker its UDP sockets (one per address, in `listens` order), and the TCP listening sockets
    (one per address) the workers share."""
    udps: list[list[socket.socket]] = [[] for _ in range(workers)]
    tcps = []
    try:
        for listen in listens:
            family = socket.AF_INET6 if ":" in listen else socket.AF_INET
            group = []
            for i in range(workers):
                s = _socket(family, socket.SOCK_DGRAM)
                udps[i].append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                except OSError:
                    pass
                _bind_one(s, (listen, port))
                group.append(s)
            if workers > 1:
                _spread_evenly(group[0], workers)
            t = _socket(family, socket.SOCK_STREAM)
            tcps.append(t)
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            _bind_one(t, (listen, port))
            t.listen(256)
    except OSError as e:
        for s in [*(s for group in udps for s in group), *tcps]:
            s.close()
        e.strerror = f"{listen}: {e.strerror or e}"
        raise
    return udps, tcps


MAX_AUTO_WORKERS = 4  # `auto` on a big host: each worker holds the tables and rebuilds them on reload


def default_workers() -> int:
    """Workers when none are asked for: one per two CPUs this process may use, at least one.

    Not one per CPU, as CoreDNS on a node of its own: in a lab the pods asking run on
    the same cores, and the path of every answer through the lab's namespaces (veth,
    conntrack, DNAT, routing) is CPU spent by the sender. Measured with
    tests/bench/bench_dns.py on 2 CPUs, as deployed, dnsperf -c 8 from a pod: one worker
    1.06-1.10x dnsmasq's qps, two workers 0.74x (they take the cores the clients and
    the kernel need). The server alone on loopback, two workers do gain (~1.3-1.8x
    dnsmasq against ~1.1-1.4x for one): workers pay where cores are spare.
    """
    return max(1, min(MAX_AUTO_WORKERS, len(os.sched_getaffinity(0)) // 2))


def run(config: str, listen: str | Sequence[str], port: int = 53, workers: int | None = None,
        pidfile: str | None = None) -> int:
    """The supervisor, serving every address of `listen`. Returns the exit code."""
    global _supervisor_pid
    listens = list(dict.fromkeys([listen] if isinstance(listen, str) else listen))
    _supervisor_pid = os.getpid()
    # One worker by default (a small machine): the process serves itself rather than supervising a
    # fork of itself, which would be a second interpreter per DNS pod doing nothing (a lab's weight).
    alone = not workers and default_workers() == 1
    workers = max(1, workers or default_workers())
    state = State(config)
    try:
        state.load()
    except R.ConfigError as e:
        log(f"invalid config:\n{e}")
        return 2
    try:
        udps, tcps = _bind(listens, port, workers)
    except OSError as e:
        log(f"cannot listen on port {port}: {e.strerror or e}")
        return 1
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    children: dict[int, int] = {}

    def spawn(i: int) -> None:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                worker_main(state, udps[i], tcps)
            except BaseException:  # noqa: BLE001
                code = 1
            os._exit(code)
        children[pid] = i

    for i in range(0 if alone else workers):
        spawn(i)
    if pidfile:  # "PID START" as labkit.processes records pids: a reused pid is never taken for this server
        with open("/proc/self/stat", encoding="ascii") as f:
            start = f.read().rsplit(")", 1)[1].split()[19]
        fd = os.open(pidfile + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {start}\n")
        os.replace(pidfile + ".tmp", pidfile)
    log(f"serving {state.rs.zone if state.rs else '?'} on {', '.join(listens)} port {port} "
        f"(udp+tcp, {'one process' if alone else f'{workers} workers'})")
    if alone:
        worker_main(state, udps[0], tcps, alone=pidfile or "")
        return 0
    code = 0
    stopping = False
    respawns: list[float] = []
    while not stopping:
        info = signal.sigtimedwait(_SIGNALS, 1.0)
        if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
            stopping = True
            break
        if info is not None and info.si_signo == signal.SIGHUP:
            for pid in children:
                _kill(pid, signal.SIGHUP)
            # Our own copy too: it is what a restarted worker starts from.
            try:
                state.load()
            except R.ConfigError as e:
                log(f"SIGHUP: config invalid, workers keep their records:\n{e}")
            except Exception as e:  # noqa: BLE001
                log(f"SIGHUP: reload failed: {e!r}")
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            i = children.pop(pid, None)
            if i is None:
                continue
            now = time.monotonic()
            respawns = [t for t in respawns if now - t < 10] + [now]
            if len(respawns) > 5:
                log("workers keep dying; giving up")
                stopping, code = True, 1
                break
            log(f"worker {pid} exited ({status}); restarting it")
            spawn(i)
    for pid in children:
        _kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 3
    while children and time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.01)
            continue
        children.pop(pid, None)
    for pid in children:
        _kill(pid, signal.SIGKILL)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    if pidfile:
        try:
            os.unlink(pidfile)
        except OSError:
            pass
    return code


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def command(config: str, listen: str | Sequence[str], port: int = 53, workers: int | None = None,
            pidfile: str | None = None, python: str | None = None) -> list[str]:
    """The argv that starts the server (for the orchestrator: no shell strings); `listen`: one address
    or several (a dual-stack pod's)."""
    from labkit.lean import module_argv

    listens = [listen] if isinstance(listen, str) else list(listen)
    argv = module_argv("labkit.dns.server", "--config", config,
                       *(arg for address in listens for arg in ("--listen", address)), "--port", str(port),
                       python=python)
    if workers:
        argv += ["--workers", str(workers)]
    if pidfile:
        argv += ["--pidfile", pidfile]
    return argv


def reload(pid: int) -> None:
    """Make the server at `pid` re-read its config file (write it with
    `DnsConfig.dump`, which is atomic, first)."""
    os.kill(pid, signal.SIGHUP)


_USAGE = ("usage: python -m labkit.dns.server --config FILE --listen IP [--listen IP ...] [--port N] "
          "[--workers N] [--pidfile FILE]")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    opts: dict[str, str] = {}
    listens: list[str] = []
    known = ("--config", "--listen", "--port", "--workers", "--pidfile")
    while args:
        a = args.pop(0)
        if a in ("-h", "--help"):
            print(_USAGE)
            return 0
        key, eq, val = a.partition("=")
        if key not in known:
            print(f"{_USAGE}\nunknown argument {a!r}", file=sys.stderr)
            return 2
        if not eq:
            if not args:
                print(f"{_USAGE}\n{a} needs a value", file=sys.stderr)
                return 2
            val = args.pop(0)
        if key == "--listen":
            listens.append(val)
        opts[key] = val
    if "--config" not in opts or "--listen" not in opts:
        print(f"{_USAGE}\n--config and --listen are required", file=sys.stderr)
        return 2
    try:
        port = int(opts.get("--port", "53"))
        workers = int(opts["--workers"]) if "--workers" in opts else None
        for listen in listens:
            socket.inet_pton(socket.AF_INET6 if ":" in listen else socket.AF_INET, listen)
    except (ValueError, OSError):
        print(f"{_USAGE}\n--port/--workers must be numbers, --listen an IP address",
              file=sys.stderr)
        return 2
    return run(opts["--config"], listens, port, workers, opts.get("--pidfile"))


if __name__ == "__main__":
    sys.exit(main())
