"""The real DNS server process on a loopback address, asked with dig and dnspython.

Needs no root and no namespaces: every server listens on 127.0.x.y at a free high
port, and all traffic stays on loopback.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from labkit import processes
from labkit.dns import server as dns_server
from labkit.dns.records import DnsConfig, Endpoint, Service, ServicePort
from tests.netutil import free_endpoint

pytestmark = pytest.mark.integration

DIG = shutil.which("dig")
REPO = Path(__file__).resolve().parents[2]




def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Server:
    def __init__(self, tmp: Path, cfg: DnsConfig, workers: int = 2):
        self.config = tmp / f"dns-{random.randrange(1 << 30)}.json"
        cfg.dump(str(self.config))
        self.addr, self.port = free_endpoint()
        argv = dns_server.command(str(self.config), self.addr, self.port, workers=workers)
        self.proc = subprocess.Popen(argv, cwd=REPO, stderr=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        self.workers: set[int] = set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read()}")
            try:
                self.query("dns-version.cluster.local.", "TXT", timeout=0.2)
                break
            except dns.exception.Timeout:
                continue
        else:
            raise RuntimeError("server did not answer")
        while len(self.workers) < workers and time.monotonic() < deadline:
            self.workers = processes.children(self.pid)

    def query(self, name, rdtype="A", *, tcp=False, timeout=2.0, **kw) -> dns.message.Message:
        q = dns.message.make_query(name, rdtype, **kw)
        if tcp:
            return dns.query.tcp(q, self.addr, port=self.port, timeout=timeout)
        return dns.query.udp(q, self.addr, port=self.port, timeout=timeout)

    def dig(self, *args: str, tcp: bool = False) -> tuple[str, list[str]]:
        out = subprocess.run(
            [DIG, f"@{self.addr}", "-p", str(self.port), "+tcp" if tcp else "+notcp",
             "+tries=1", "+time=3", "+noall", "+comments", "+answer", *args],
            capture_output=True, text=True, timeout=20, check=True).stdout
        status = out.split("status: ", 1)[1].split(",", 1)[0]
        answers = sorted(
            " ".join(line.split()[3:]) for line in out.splitlines()
            if line and not line.startswith(";"))
        return status, answers

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stderr.close()
        deadline = time.monotonic() + 5
        while any(alive(p) for p in self.workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [p for p in self.workers if alive(p)], "orphaned workers"


def cluster_config(**kw) -> DnsConfig:
    return DnsConfig(
        nameservers=["10.96.0.10"],
        services=[
            Service("default", "web", "ClusterIP", "10.96.0.20",
                    ports=[ServicePort(80, "http")], endpoints=[Endpoint("10.244.1.5")]),
            Service("default", "np", "NodePort", "10.96.0.21",
                    ports=[ServicePort(53, "dns", "UDP")]),
            Service("prod", "db", "Headless", ports=[ServicePort(5432, "pg")],
                    endpoints=[Endpoint("10.244.1.6", hostname="db-0"),
                               Endpoint("10.244.2.6", hostname="db-1"),
                               Endpoint("10.244.3.6", hostname="db-2", ready=False)]),
            Service("prod", "ext", "ExternalName", external_name="db.example.com"),
        ], **kw)


@pytest.fixture()
def srv(tmp_path):
    s = Server(tmp_path, cluster_config())
    yield s
    s.stop()


# Every record kind, as dig shows it: (args, status, answers)
DIG_CASES = [
    (["dns-version.cluster.local", "TXT"], "NOERROR", ['TXT "1.1.0"']),
    (["web.default.svc.cluster.local", "A"], "NOERROR", ["A 10.96.0.20"]),
    (["WEB.default.svc.cluster.local", "A"], "NOERROR", ["A 10.96.0.20"]),
    (["np.default.svc.cluster.local", "A"], "NOERROR", ["A 10.96.0.21"]),
    (["web.default.svc.cluster.local", "AAAA"], "NOERROR", []),
    (["_http._tcp.web.default.svc.cluster.local", "SRV"], "NOERROR",
     ["SRV 0 100 80 web.default.svc.cluster.local."]),
    (["_dns._udp.np.default.svc.cluster.local", "SRV"], "NOERROR",
     ["SRV 0 100 53 np.default.svc.cluster.local."]),
    (["db.prod.svc.cluster.local", "A"], "NOERROR", ["A 10.244.1.6", "A 10.244.2.6"]),
    (["db-1.db.prod.svc.cluster.local", "A"], "NOERROR", ["A 10.244.2.6"]),
    (["db-2.db.prod.svc.cluster.local", "A"], "NXDOMAIN", []),
    (["_pg._tcp.db.prod.svc.cluster.local", "SRV"], "NOERROR",
     ["SRV 0 50 5432 db-0.db.prod.svc.cluster.local.",
      "SRV 0 50 5432 db-1.db.prod.svc.cluster.local."]),
    (["-x", "10.96.0.20"], "NOERROR", ["PTR web.default.svc.cluster.local."]),
    (["-x", "10.244.2.6"], "NOERROR", ["PTR db-1.db.prod.svc.cluster.local."]),
    (["ext.prod.svc.cluster.local", "A"], "NOERROR", ["CNAME db.example.com."]),
    (["ext.prod.svc.cluster.local", "CNAME"], "NOERROR", ["CNAME db.example.com."]),
    (["nope.default.svc.cluster.local", "A"], "NXDOMAIN", []),
    (["web.nope.svc.cluster.local", "A"], "NXDOMAIN", []),
    (["default.svc.cluster.local", "A"], "NOERROR", []),
    (["svc.cluster.local", "A"], "NOERROR", []),
    (["cluster.local", "SOA"], "NOERROR",
     ["SOA ns.dns.cluster.local. hostmaster.cluster.local."]),
    (["cluster.local", "NS"], "NOERROR", ["NS ns.dns.cluster.local."]),
    (["10-244-9-9.default.pod.cluster.local", "A"], "NOERROR", ["A 10.244.9.9"]),
    (["example.com", "A"], "REFUSED", []),
]


@pytest.fixture
def dig_installed() -> None:
    if DIG is None:
        pytest.fail("dig missing: apt-get install dnsutils")


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_dig_every_record_kind(srv, tcp, dig_installed):
    for args, status, answers in DIG_CASES:
        got_status, got = srv.dig(*args, tcp=tcp)
        if answers and answers[0].startswith("SOA"):
            got = [" ".join(a.split()[:3]) for a in got]
        assert (got_status, got) == (status, answers), args


def test_dig_negative_answers_carry_soa(srv, dig_installed):
    for name, qtype in (("nope.default.svc.cluster.local", "A"),
                        ("web.default.svc.cluster.local", "AAAA")):
        out = subprocess.run([DIG, f"@{srv.addr}", "-p", str(srv.port), name, qtype],
                             capture_output=True, text=True, check=True).stdout
        assert "AUTHORITY: 1" in out and "IN\tSOA\tns.dns.cluster.local." in out


NAMES = [("web.default.svc.cluster.local.", "A"), ("web.default.svc.cluster.local.", "AAAA"),
         ("_http._tcp.web.default.svc.cluster.local.", "SRV"),
         ("db.prod.svc.cluster.local.", "A"), ("20.0.96.10.in-addr.arpa.", "PTR"),
         ("ext.prod.svc.cluster.local.", "A"), ("nope.default.svc.cluster.local.", "A"),
         ("dns-version.cluster.local.", "TXT"), ("default.svc.cluster.local.", "SRV"),
         ("example.com.", "A")]


def summary(r: dns.message.Message):
    return (r.rcode(), sorted(rr.to_text().lower() for rr in r.answer),
            sorted(rr.to_text().lower() for rr in r.authority))


def test_hot_path_and_slow_path_agree(srv):
    """Queries take the whole-query table, the question table or the parser depending
    on their shape and on what the worker has seen; TCP always the parser. All must
    give the same answers."""
    for name, rdtype in NAMES:
        ref = srv.query(name, rdtype, use_edns=False)
        assert ref.edns == -1
        # repeated: the first answers are computed or glued, later ones come from the
        # precomputed or learnt whole-query table, in whichever worker gets them
        for _ in range(6):
            for kw in ({"use_edns": 0}, {"use_edns": 0, "want_dnssec": True},
                       {"use_edns": 0, "payload": 4096}, {"use_edns": False}):
                r = srv.query(name, rdtype, **kw)
                assert r.edns == kw["use_edns"] if kw["use_edns"] is not False else -1
                assert summary(r) == summary(ref), (name, kw)
                assert bool(r.ednsflags & dns.flags.DO) == bool(kw.get("want_dnssec"))
            q = dns.message.make_query(name.upper(), rdtype)
            q.flags &= ~dns.flags.RD
            r = dns.query.udp(q, srv.addr, port=srv.port, timeout=2)
            assert r.question == q.question and not r.flags & dns.flags.RD
            assert summary(r) == summary(ref)
        assert summary(srv.query(name, rdtype, tcp=True)) == summary(ref)


def test_query_id_rd_and_case_are_echoed(srv):
    q = dns.message.make_query("WeB.DeFault.svc.cluster.local.", "A")
    q.flags &= ~dns.flags.RD
    r = dns.query.udp(q, srv.addr, port=srv.port, timeout=2)
    assert r.id == q.id and not r.flags & dns.flags.RD and r.flags & dns.flags.AA
    assert r.question[0].name.to_text() == "WeB.DeFault.svc.cluster.local."


def test_tcp_several_queries_per_connection(srv):
    qs = [dns.message.make_query(n, t) for n, t in NAMES[:5]]
    with socket.create_connection((srv.addr, srv.port), timeout=5) as c:
        c.sendall(b"".join(struct.pack("!H", len(w)) + w for w in (q.to_wire() for q in qs)))
        f = c.makefile("rb")
        for q in qs:
            (n,) = struct.unpack("!H", f.read(2))
            r = dns.message.from_wire(f.read(n))
            assert r.id == q.id and r.question == q.question


def test_truncated_over_udp_full_over_tcp(tmp_path):
    eps = [Endpoint(f"10.244.9.{i}", hostname=f"m{i}") for i in range(1, 61)]
    s = Server(tmp_path, DnsConfig(services=[Service("a", "big", "Headless", endpoints=eps)]),
               workers=1)
    try:
        r = s.query("big.a.svc.cluster.local.", "A", use_edns=False)
        assert r.flags & dns.flags.TC
        r = dns.query.udp_with_fallback(dns.message.make_query("big.a.svc.cluster.local.", "A"),
                                        s.addr, port=s.port, timeout=2)[0]
        assert len(r.answer[0]) == 60
        if DIG:
            status, answers = s.dig("big.a.svc.cluster.local", "A")   # dig retries on TCP
            assert status == "NOERROR" and len(answers) == 60
    finally:
        s.stop()


def test_fuzz_then_still_answers(srv):
    rnd = random.Random(99)
    seed = dns.message.make_query("web.default.svc.cluster.local.", "A", use_edns=0).to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        for i in range(6000):
            if i % 3 == 0:
                pkt = rnd.randbytes(rnd.randrange(0, 100))
            elif i % 3 == 1:
                pkt = seed[:rnd.randrange(len(seed))]
            else:
                b = bytearray(seed)
                for _ in range(rnd.randrange(1, 5)):
                    b[rnd.randrange(len(b))] = rnd.randrange(256)
                pkt = bytes(b)
            u.sendto(pkt, (srv.addr, srv.port))
            if i % 200 == 0:
                time.sleep(0.005)     # let the server keep up; loss is not the point
    for i in range(30):
        with socket.create_connection((srv.addr, srv.port), timeout=5) as c:
            junk = rnd.randbytes(rnd.randrange(0, 60))
            c.sendall(struct.pack("!H", len(junk)) + junk if i % 2 else junk)
    for _ in range(10):
        r = srv.query("web.default.svc.cluster.local.", "A")
        assert r.answer[0][0].address == "10.96.0.20"
    assert srv.query("web.default.svc.cluster.local.", "A", tcp=True).answer
    assert srv.proc.poll() is None and processes.children(srv.pid) == srv.workers


def test_forwarding_to_upstream_instance(tmp_path):
    many = [Endpoint(f"10.1.9.{i}", hostname=f"m{i}") for i in range(1, 61)]
    up = Server(tmp_path, DnsConfig(zone="example.test", services=[
        Service("default", "web", "ClusterIP", "10.1.2.3"),
        Service("default", "big", "Headless", endpoints=many)]), workers=1)
    try:
        cfg = cluster_config(upstreams=[f"{up.addr}:{up.port}"])
        cfg.services.append(Service("prod", "fwd", "ExternalName",
                                    external_name="web.default.svc.example.test"))
        down = Server(tmp_path, cfg)
        try:
            for tcp in (False, True):
                r = down.query("WEB.default.svc.example.test.", "A", tcp=tcp)
                assert r.rcode() == dns.rcode.NOERROR
                assert r.answer[0][0].address == "10.1.2.3"
                assert r.question[0].name.to_text() == "WEB.default.svc.example.test."
                r = down.query("nope.default.svc.example.test.", "A", tcp=tcp)
                assert r.rcode() == dns.rcode.NXDOMAIN
            # big answers: truncated over plain UDP, whole with EDNS or over TCP (which
            # the server asks upstream over TCP after a truncated UDP answer)
            big = "big.default.svc.example.test."
            assert down.query(big, "A", use_edns=False).flags & dns.flags.TC
            assert len(down.query(big, "A", use_edns=0, payload=4096).answer[0]) == 60
            assert len(down.query(big, "A", use_edns=False, tcp=True).answer[0]) == 60
            # an ExternalName to a name upstream is completed, like CoreDNS does
            for tcp in (False, True):
                r = down.query("fwd.prod.svc.cluster.local.", "A", tcp=tcp)
                assert [rr.rdtype for rr in r.answer] == [dns.rdatatype.CNAME,
                                                         dns.rdatatype.A]
                assert r.answer[1][0].address == "10.1.2.3"
            # our own names are still ours, with recursion available
            r = down.query("web.default.svc.cluster.local.", "A")
            assert r.answer[0][0].address == "10.96.0.20" and r.flags & dns.flags.RA
            if DIG:
                assert down.dig("web.default.svc.example.test", "A") == (
                    "NOERROR", ["A 10.1.2.3"])
        finally:
            down.stop()
    finally:
        up.stop()


def test_silent_upstream_gives_servfail(tmp_path):
    addr, port = free_endpoint()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as black_hole:
        black_hole.bind((addr, port))
        s = Server(tmp_path, cluster_config(upstreams=[f"{addr}:{port}"],
                                            upstream_timeout=0.5), workers=1)
        try:
            t = time.monotonic()
            r = s.query("example.com.", "A", timeout=5)
            assert r.rcode() == dns.rcode.SERVFAIL and time.monotonic() - t < 3
            assert black_hole.recv(512)        # it was asked
            r = s.query("example.com.", "A", tcp=True, timeout=5)
            assert r.rcode() == dns.rcode.SERVFAIL
        finally:
            s.stop()


def test_refused_without_upstream(srv):
    for tcp in (False, True):
        r = srv.query("example.com.", "A", tcp=tcp)
        assert r.rcode() == dns.rcode.REFUSED and not r.answer


def test_sighup_reloads_every_worker(srv):
    cfg = cluster_config()
    cfg.services.append(Service("default", "new", "ClusterIP", "10.96.0.99"))
    cfg.services = [s for s in cfg.services if s.name != "web"]
    assert srv.query("new.default.svc.cluster.local.", "A").rcode() == dns.rcode.NXDOMAIN
    cfg.dump(str(srv.config))
    dns_server.reload(srv.pid)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        # fresh source ports each time: spreads over the SO_REUSEPORT workers
        results = [srv.query("new.default.svc.cluster.local.", "A").rcode() for _ in range(20)]
        if all(r == dns.rcode.NOERROR for r in results):
            break
        time.sleep(0.05)
    else:
        pytest.fail("not reloaded")
    assert srv.query("web.default.svc.cluster.local.", "A").rcode() == dns.rcode.NXDOMAIN
    # a broken file is refused; the server keeps serving the last good records
    srv.config.write_text("{broken")
    dns_server.reload(srv.pid)
    time.sleep(0.3)
    for _ in range(10):
        assert srv.query("new.default.svc.cluster.local.", "A").answer
    assert srv.proc.poll() is None and processes.children(srv.pid) == srv.workers


def test_dead_worker_is_replaced_with_current_records(srv):
    cfg = cluster_config()
    cfg.services.append(Service("default", "late", "ClusterIP", "10.96.0.77"))
    cfg.dump(str(srv.config))
    dns_server.reload(srv.pid)
    time.sleep(0.5)
    victim = sorted(srv.workers)[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        now = processes.children(srv.pid)
        if victim not in now and len(now) == 2:
            break
        time.sleep(0.05)
    else:
        pytest.fail("worker not replaced")
    srv.workers = now
    for _ in range(20):
        assert srv.query("late.default.svc.cluster.local.", "A").answer[0][0].address == \
            "10.96.0.77"


def test_sigterm_leaves_no_processes(tmp_path):
    s = Server(tmp_path, cluster_config(), workers=2)
    workers = set(s.workers)
    assert len(workers) == 2
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(10) == 0
    time.sleep(0.1)
    assert not [p for p in workers if alive(p)]
    s.stop()


def test_workers_die_with_a_killed_supervisor(tmp_path):
    s = Server(tmp_path, cluster_config(), workers=2)
    s.proc.kill()
    s.proc.wait(5)
    s.stop()   # asserts that the workers went away


def test_bad_config_and_busy_address_exit_with_a_message(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"zone": "cluster.local", "services": [{"namespace": "a"}]}')
    addr, port = free_endpoint()
    p = subprocess.run(dns_server.command(str(bad), addr, port), cwd=REPO,
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 2 and "services[0].name: required" in p.stderr
    s = Server(tmp_path, cluster_config(), workers=1)
    try:
        good = tmp_path / "good.json"
        cluster_config().dump(str(good))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            addr2, port2 = free_endpoint()
            t.bind((addr2, port2))
            t.listen(1)
            p = subprocess.run(dns_server.command(str(good), addr2, port2), cwd=REPO,
                               capture_output=True, text=True, timeout=20)
        assert p.returncode == 1 and "cannot listen" in p.stderr
        p = subprocess.run([sys.executable, "-m", "labkit.dns.server", "--listen", addr],
                           cwd=REPO, capture_output=True, text=True, timeout=20)
        assert p.returncode == 2 and "--config" in p.stderr
    finally:
        s.stop()




def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(512) == b""
    except ConnectionResetError:
        return True
    except BlockingIOError:
        return False


def test_tcp_cannot_be_held_byte_by_byte(tmp_path):
    """One client holding TCP connections with a byte every half second (each within
    the idle timeout) is cut off: past the per-client cap at once, and every held
    connection when its message's deadline passes; another client is served
    throughout."""
    import select

    s = Server(tmp_path, cluster_config(), workers=1)
    held: list[socket.socket] = []
    try:
        msg = dns.message.make_query("web.default.svc.cluster.local.", "A").to_wire()
        framed = len(msg).to_bytes(2, "big") + msg
        for _ in range(dns_server.MAX_TCP_PER_CLIENT):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.bind(("127.0.0.2", 0))
            c.connect((s.addr, s.port))
            c.send(framed[:1])
            held.append(c)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as extra:
            extra.bind(("127.0.0.2", 0))
            extra.connect((s.addr, s.port))
            extra.settimeout(20)
            extra.send(framed)
            assert _closed_by_server(extra)           # over the per-client cap: no answer, closed
        q = dns.message.make_query("web.default.svc.cluster.local.", "A")
        other = dns.query.tcp(q, s.addr, port=s.port, timeout=5, source="127.0.0.3")
        assert other.answer[0][0].address == "10.96.0.20"
        sent, closed = 1, set()
        give_up = time.monotonic() + 60               # the old server held them for ever
        while len(closed) < len(held) and time.monotonic() < give_up:
            readable, _, _ = select.select([c for c in held if c not in closed], [], [], 0.5)
            for c in readable:
                c.setblocking(False)
                if _closed_by_server(c):
                    closed.add(c)
            for c in held:
                if c not in closed and sent < len(framed):
                    try:
                        c.send(framed[sent:sent + 1])
                    except OSError:
                        closed.add(c)
            sent += 1
        assert len(closed) == len(held) and sent < len(framed)   # cut off before the message was complete
        again = dns.query.tcp(q, s.addr, port=s.port, timeout=5, source="127.0.0.2")
        assert again.answer[0][0].address == "10.96.0.20"      # its slots were given back
        assert s.proc.poll() is None
    finally:
        for c in held:
            c.close()
        s.stop()


def test_udp_answers_stay_within_our_edns_size(tmp_path):
    """The client's EDNS size is honoured only up to ours (1232), on the hot path too
    (asked three times: slow path, learnt shape, exact shape); beyond it TC=1, and the
    full answer over TCP."""
    eps = [Endpoint(f"10.244.9.{i}", hostname=f"m{i}") for i in range(1, 101)]
    s = Server(tmp_path, DnsConfig(services=[Service("a", "big", "Headless", ports=[ServicePort(80, "http")],
                                                     endpoints=eps)]), workers=1)
    try:
        for name, rdtype in (("big.a.svc.cluster.local.", "A"), ("_http._tcp.big.a.svc.cluster.local.", "SRV"),
                             ("big.a.svc.cluster.local.", "ANY")):
            q = dns.message.make_query(name, rdtype, use_edns=0, payload=65535)
            wire_q = q.to_wire()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.settimeout(5)
                for _ in range(3):
                    u.sendto(wire_q, (s.addr, s.port))
                    raw = u.recv(65535)
                    assert len(raw) <= 1232 and len(raw) / len(wire_q) < 1232 / 50, (name, rdtype)
                    r = dns.message.from_wire(raw)
                    if rdtype == "ANY":
                        assert [rrset.rdtype for rrset in r.answer] == [dns.rdatatype.HINFO]
                    else:
                        assert r.flags & dns.flags.TC and not r.answer
            if rdtype != "ANY":
                assert len(dns.query.tcp(q, s.addr, port=s.port, timeout=5).answer[0]) == 100
    finally:
        s.stop()


@pytest.mark.parametrize("workers", [None, 1])
def test_deploy_starts_the_configured_process_model(tmp_path, workers):
    """`up`'s start path (dns.deploy.start_servers): by default the server's default
    number of workers, and when that is one, the server process alone (no fork: one interpreter
    per DNS pod); `cluster.dns.workers` fixes the count."""
    from labkit.dns.deploy import start_servers

    config = tmp_path / "dns.json"
    cluster_config().dump(str(config))
    addr, port = free_endpoint()
    (pid,) = start_servers(str(config), [("dns-0", "/proc/self/ns/net", addr)], str(tmp_path),
                           workers=workers, port=port)
    try:
        serving = int((tmp_path / "dns-0.pid").read_text().split()[0])   # written once every worker is forked
        default = dns_server.default_workers()
        assert len(processes.children(serving)) == (workers or (0 if default == 1 else default))
        q = dns.message.make_query("web.default.svc.cluster.local.", "A")
        assert dns.query.udp(q, addr, port=port, timeout=5).answer[0][0].address == "10.96.0.20"
    finally:
        os.kill(serving, signal.SIGTERM)
        os.waitpid(pid, 0)
