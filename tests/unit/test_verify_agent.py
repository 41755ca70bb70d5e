"""labkit.agent over loopback: serve, probe, resolve (glibc search list), probe-many, the command line."""

from __future__ import annotations

import io
import json
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from labkit import agent

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server() -> Iterator[dict]:
    """An in-process `serve` on ephemeral loopback ports, answering 'pod-a'."""
    stop, listening = threading.Event(), threading.Event()
    ready: list[str] = []

    def report(line: str) -> None:
        ready.append(line)
        listening.set()

    thread = threading.Thread(target=agent.serve, args=([0], [0], "pod-a", "127.0.0.1", report, stop),
                              daemon=True)
    thread.start()
    assert listening.wait(5), "the agent never said it was serving"
    info = json.loads(ready[0])
    yield {"tcp": info["tcp"][0], "udp": info["udp"][0]}
    stop.set()
    thread.join(5)


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- serve and probe


def test_tcp_probe_open_reads_the_reply(server: dict) -> None:
    assert agent.probe_tcp("127.0.0.1", server["tcp"], 1) == {"open": True, "reason": "connected (pod-a)",
                                                              "reply": "pod-a"}


def test_udp_probe_open_reads_the_reply(server: dict) -> None:
    assert agent.probe_udp("127.0.0.1", server["udp"], 1) == {"open": True, "reason": "reply (pod-a)",
                                                              "reply": "pod-a"}


def test_closed_ports_are_reported_as_refused_not_as_timeouts() -> None:
    tcp = agent.probe("tcp", "127.0.0.1", free_port(socket.SOCK_STREAM), 1)
    udp = agent.probe("udp", "127.0.0.1", free_port(socket.SOCK_DGRAM), 1)
    assert tcp == {"open": False, "reason": "connection refused", "reply": None}
    assert udp == {"open": False, "reason": "port unreachable", "reply": None}


def test_udp_silence_is_closed_after_the_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:   # bound, never answers
        mute.bind(("127.0.0.1", 0))
        result = agent.probe_udp("127.0.0.1", mute.getsockname()[1], 0.2)
        assert result == {"open": False, "reason": "no reply in 0.2s", "reply": None}
        assert mute.recv(512) == agent.UDP_PROBE_PAYLOAD


def test_udp_probe_payload_is_a_dns_status_query() -> None:
    msg = dns.message.from_wire(agent.UDP_PROBE_PAYLOAD)
    assert msg.opcode() == 2 and [q.name.to_text() for q in msg.question] == ["."]


def test_tcp_server_that_says_nothing_is_still_open() -> None:
    with socket.socket() as quiet:
        quiet.bind(("127.0.0.1", 0))
        quiet.listen(4)
        result = agent.probe_tcp("127.0.0.1", quiet.getsockname()[1], 1)
    assert result == {"open": True, "reason": "connected", "reply": None}


def test_serve_reports_a_busy_port(capsys) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        assert agent.serve([busy.getsockname()[1]], [], "x", "127.0.0.1") == 2
    assert "agent serve: cannot bind: Address already in use" in capsys.readouterr().err


# ---------------------------------------------------------------- resolve


class FakeDNS:
    """A DNS server on loopback: answers from `zone`, NXDOMAIN inside `suffix`, REFUSED outside; logs queries.

    A zone's addresses are both families': an A query is answered with its IPv4 ones, AAAA with its IPv6
    ones (NODATA when it has none of that family). `host`: the loopback address to listen on."""

    def __init__(self, zone: dict[str, list[str]], suffix: str = "cluster.local.", truncate: bool = False,
                 host: str = "127.0.0.1"):
        self.zone, self.suffix, self.truncate, self.host = zone, suffix, truncate, host
        self.asked: list[str] = []
        self.types: list[str] = []
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.udp = socket.socket(family, socket.SOCK_DGRAM)
        self.udp.bind((host, 0))
        self.port = self.udp.getsockname()[1]
        self.tcp = socket.socket(family)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((host, self.port))
        self.tcp.listen(8)
        self.tcp_queries = 0
        threading.Thread(target=self._serve_udp, daemon=True).start()
        threading.Thread(target=self._serve_tcp, daemon=True).start()

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def answer(self, wire: bytes, tcp: bool) -> bytes:
        q = dns.message.from_wire(wire)
        name = q.question[0].name.to_text()
        rdtype = dns.rdatatype.to_text(q.question[0].rdtype)
        self.asked.append(name)
        self.types.append(rdtype)
        r = dns.message.make_response(q)
        if name in self.zone:
            if self.truncate and not tcp:
                r.flags |= dns.flags.TC
                return r.to_wire()
            found = [a for a in self.zone[name] if (":" in a) == (rdtype == "AAAA")]
            if found:
                r.answer.append(dns.rrset.from_text_list(name, 5, "IN", rdtype, found))
        elif name.endswith(self.suffix):
            r.set_rcode(dns.rcode.NXDOMAIN)
        else:
            r.set_rcode(dns.rcode.REFUSED)
        return r.to_wire()

    def _serve_udp(self) -> None:
        while True:
            try:
                data, peer = self.udp.recvfrom(4096)
            except OSError:
                return
            self.udp.sendto(self.answer(data, False), peer)

    def _serve_tcp(self) -> None:
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            with conn:
                self.tcp_queries += 1
                size = int.from_bytes(conn.recv(2), "big")
                data = b""
                while len(data) < size:
                    data += conn.recv(size - len(data))
                out = self.answer(data, True)
                conn.sendall(len(out).to_bytes(2, "big") + out)

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()



SEARCH = ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"]


@pytest.fixture
def cluster_dns() -> Iterator[FakeDNS]:
    server = FakeDNS({
        "web.default.svc.cluster.local.": ["10.96.0.20"],
        "db.prod.svc.cluster.local.": ["10.96.0.30"],
        "db-0.db.prod.svc.cluster.local.": ["10.244.1.5"],
        "headless.default.svc.cluster.local.": ["10.244.0.7", "10.244.2.9"],
        "empty.default.svc.cluster.local.": [],
    })
    yield server
    server.close()


@pytest.mark.parametrize("name, search, ndots, tried", [
    ("web", SEARCH, 5, ["web.default.svc.cluster.local.", "web.svc.cluster.local.", "web.cluster.local.", "web."]),
    ("a.b.c.d.e", SEARCH, 5, ["a.b.c.d.e.default.svc.cluster.local.", "a.b.c.d.e.svc.cluster.local.",
                              "a.b.c.d.e.cluster.local.", "a.b.c.d.e."]),
    ("a.b.c.d.e.f", SEARCH, 5, ["a.b.c.d.e.f.", "a.b.c.d.e.f.default.svc.cluster.local.",
                                "a.b.c.d.e.f.svc.cluster.local.", "a.b.c.d.e.f.cluster.local."]),
    ("web.default", ["x.test"], 1, ["web.default.", "web.default.x.test."]),
    ("web.", SEARCH, 5, ["web."]),
    ("web", [], 5, ["web."]),
])
def test_candidates_follow_glibc(name: str, search: list[str], ndots: int, tried: list[str]) -> None:
    assert agent.candidates(name, search, ndots) == tried


def test_short_name_through_the_search_list(cluster_dns: FakeDNS) -> None:
    res = agent.resolve("web", cluster_dns.address, SEARCH, 5)
    assert (res["status"], res["addresses"], res["name"]) == ("NOERROR", ["10.96.0.20"],
                                                              "web.default.svc.cluster.local.")
    assert cluster_dns.asked == ["web.default.svc.cluster.local."]


def test_namespaced_name_after_an_nxdomain(cluster_dns: FakeDNS) -> None:
    res = agent.resolve("db.prod", cluster_dns.address, SEARCH, 5)
    assert (res["status"], res["addresses"]) == ("NOERROR", ["10.96.0.30"])
    assert cluster_dns.asked == ["db.prod.default.svc.cluster.local.", "db.prod.svc.cluster.local."]


def test_every_address_of_a_headless_name(cluster_dns: FakeDNS) -> None:
    assert sorted(agent.resolve("headless", cluster_dns.address, SEARCH, 5)["addresses"]) == [
        "10.244.0.7", "10.244.2.9"]


def test_nxdomain_after_the_whole_list_even_when_outside_is_refused(cluster_dns: FakeDNS) -> None:
    res = agent.resolve("nope.default", cluster_dns.address, SEARCH, 5)
    assert res["status"] == "NXDOMAIN" and res["addresses"] == []
    assert res["tried"] == cluster_dns.asked == [
        "nope.default.default.svc.cluster.local.", "nope.default.svc.cluster.local.",
        "nope.default.cluster.local.", "nope.default."]
    assert res["reason"].startswith("NXDOMAIN (tried nope.default.default.svc.cluster.local., ")
    assert res["reason"].endswith("; refused: nope.default.)")


def test_only_refused_is_refused(cluster_dns: FakeDNS) -> None:
    assert agent.resolve("example.org.", cluster_dns.address, SEARCH, 5)["status"] == "REFUSED"


def test_nodata_when_the_name_exists_without_addresses(cluster_dns: FakeDNS) -> None:
    assert agent.resolve("empty", cluster_dns.address, SEARCH, 5)["status"] == "NODATA"


def test_truncated_answers_are_asked_again_over_tcp() -> None:
    server = FakeDNS({"big.default.svc.cluster.local.": ["10.96.0.40"]}, truncate=True)
    try:
        res = agent.resolve("big.default.svc.cluster.local.", server.address, [], 5)
    finally:
        server.close()
    assert (res["status"], res["addresses"], server.tcp_queries) == ("NOERROR", ["10.96.0.40"], 1)


def test_a_silent_nameserver_times_out() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:
        mute.bind(("127.0.0.1", 0))
        res = agent.resolve("web", f"127.0.0.1:{mute.getsockname()[1]}", SEARCH, 5, timeout=0.2)
    assert res["status"] == "TIMEOUT"
    assert res["reason"].startswith("no answer from 127.0.0.1:") and res["reason"].endswith(
        " in 0.2s for web.default.svc.cluster.local.")


def test_resolv_conf_is_read(tmp_path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# kubelet\nnameserver 10.96.0.10\nnameserver 8.8.8.8\nsearch a.svc.z svc.z z\n"
                    "options ndots:5 timeout:1\n")
    assert agent.read_resolv_conf(str(conf)) == {"nameserver": "10.96.0.10", "search": ["a.svc.z", "svc.z", "z"],
                                                 "ndots": 5}
    assert agent.read_resolv_conf(str(tmp_path / "missing")) == {"nameserver": None, "search": [], "ndots": 1}


# ---------------------------------------------------------------- probe-many


def test_probe_many_runs_everything_at_once(server: dict, cluster_dns: FakeDNS, monkeypatch) -> None:
    # the two silent UDP probes (ids 5 and 6) must be in flight together: each waits for the other
    both_in_flight = threading.Barrier(2)
    run_request = agent.run_request

    def run_together(req: dict) -> dict:
        if req.get("id") in (5, 6):
            both_in_flight.wait(timeout=5)  # broken, and no result for either, if they ran one by one
        return run_request(req)

    monkeypatch.setattr(agent, "run_request", run_together)
    dns_conf = {"nameserver": cluster_dns.address, "search": SEARCH, "ndots": 5}
    cluster_dns.zone["local.default.svc.cluster.local."] = ["127.0.0.1"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:
        mute.bind(("127.0.0.1", 0))
        requests = [
            {"id": 0, "op": "connect", "protocol": "tcp", "host": "127.0.0.1", "port": server["tcp"], "timeout": 1},
            {"id": 1, "op": "connect", "protocol": "udp", "host": "127.0.0.1", "port": server["udp"], "timeout": 1},
            {"id": 2, "op": "connect", "protocol": "tcp", "host": "local", "port": server["tcp"], "timeout": 1,
             "dns": dns_conf},
            {"id": 3, "op": "connect", "protocol": "tcp", "host": "nope", "port": 80, "timeout": 1, "dns": dns_conf},
            {"id": 4, "op": "resolve", "name": "db.prod", "timeout": 1, "dns": dns_conf},
            {"id": 5, "op": "connect", "protocol": "udp", "host": "127.0.0.1", "port": mute.getsockname()[1],
             "timeout": 0.6},
            {"id": 6, "op": "connect", "protocol": "udp", "host": "127.0.0.1", "port": mute.getsockname()[1],
             "timeout": 0.6},
            {"id": 7, "op": "connect", "host": "127.0.0.1"},
        ]
        out = io.StringIO()
        agent.probe_many(io.StringIO("".join(json.dumps(r) + "\n" for r in requests) + "\n"), out)
    results = {r["id"]: r for r in map(json.loads, out.getvalue().splitlines())}
    assert sorted(results) == list(range(8))
    assert results[0]["open"] and results[0]["reply"] == "pod-a"
    assert results[1]["open"] and results[1]["reason"] == "reply (pod-a)"
    assert results[2]["open"] and results[2]["addresses"] == ["127.0.0.1"]
    assert results[2]["resolved"]["name"] == "local.default.svc.cluster.local."
    assert not results[3]["open"] and results[3]["reason"].startswith("name not resolved: NXDOMAIN (tried ")
    assert (results[4]["status"], results[4]["addresses"]) == ("NOERROR", ["10.96.0.30"])
    assert results[5]["reason"] == results[6]["reason"] == "no reply in 0.6s"
    assert results[7]["status"] == "ERROR" and results[7]["reason"].startswith("agent error: KeyError")


# ---------------------------------------------------------------- the command line, as verify runs it


def run_agent(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labkit.agent", *args], capture_output=True, text=True,
                          input=stdin, timeout=20, cwd=ROOT)


def test_command_line_serve_and_probe() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "labkit.agent", "serve", "--tcp", "0", "--udp", "0",
                             "--reply", "web-1", "--bind", "127.0.0.1"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["ready"] is True
        tcp, udp = str(ready["tcp"][0]), str(ready["udp"][0])
        ok = run_agent("probe", "--tcp", "127.0.0.1", tcp, "--timeout", "1")
        assert (ok.returncode, ok.stdout) == (0, "open: connected (web-1)\n")
        ok = run_agent("probe", "--udp", "127.0.0.1", udp)
        assert (ok.returncode, ok.stdout) == (0, "open: reply (web-1)\n")
        closed = run_agent("probe", "--tcp", "127.0.0.1", str(free_port(socket.SOCK_STREAM)))
        assert (closed.returncode, closed.stdout) == (1, "closed: connection refused\n")
        many = run_agent("probe-many", stdin=json.dumps({"id": "x", "op": "connect", "host": "127.0.0.1",
                                                         "port": int(tcp)}) + "\n")
        assert many.returncode == 0 and json.loads(many.stdout)["reply"] == "web-1"
    finally:
        proc.terminate()
        proc.wait(5)
        proc.stdout.close()


def test_command_line_resolve(cluster_dns: FakeDNS) -> None:
    ok = run_agent("resolve", "headless", "--nameserver", cluster_dns.address, "--search", " ".join(SEARCH),
                   "--ndots", "5")
    assert ok.returncode == 0 and sorted(ok.stdout.split()) == ["10.244.0.7", "10.244.2.9"]
    nx = run_agent("resolve", "nope.default", "--nameserver", cluster_dns.address, "--search", " ".join(SEARCH),
                   "--ndots", "5")
    assert (nx.returncode, nx.stdout) == (1, "NXDOMAIN\n")


def test_probe_path_imports_nothing_heavy() -> None:
    code = ("import sys, labkit.agent as a; a.probe('tcp', '127.0.0.1', 9, 0.1); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dns', 'pydantic', 'rich', 'pyroute2', "
            "'yaml', 'labkit')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "['labkit', 'labkit.agent']"


def test_serve_until_eof_stops_when_its_parent_goes() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "labkit.agent", "serve", "--until-eof", "--tcp", "0",
                             "--bind", "127.0.0.1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)
    assert proc.stdout is not None and proc.stdin is not None
    port = json.loads(proc.stdout.readline())["tcp"][0]
    assert agent.probe_tcp("127.0.0.1", port, 1)["open"]
    proc.stdin.close()
    assert proc.wait(5) == 0
    proc.stdout.close()
    assert agent.probe_tcp("127.0.0.1", port, 1)["reason"] == "connection refused"


def _accept_queue_full(listener: socket.socket) -> bool:
    """TCP_INFO of a listening socket: tcpi_unacked is its accept queue's length, tcpi_sacked the
    queue's limit; the kernel drops new SYNs once the length exceeds the limit."""
    info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    length, limit = struct.unpack_from("II", info, 24)
    return length > limit


def _full_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A listener whose accept queue is full: new SYNs are dropped until someone accepts."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    fillers = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(srv.getsockname())
        except BlockingIOError:
            pass
        fillers.append(c)
    deadline = time.monotonic() + 5
    while not _accept_queue_full(srv):  # the fillers' handshakes complete in the kernel, not at once
        assert time.monotonic() < deadline, "the fillers never filled the accept queue"
        time.sleep(0.005)

    def drain() -> None:
        time.sleep(0.25)
        srv.settimeout(2)
        for _ in range(8):
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=drain, daemon=True).start()
    return srv, fillers


@pytest.mark.parametrize("retry_every, opened", [(agent.RETRY_EVERY, True), (10.0, False)])
def test_a_dropped_syn_is_sent_again_within_the_timeout(monkeypatch, retry_every: float, opened: bool) -> None:
    monkeypatch.setattr(agent, "RETRY_EVERY", retry_every)
    srv, fillers = _full_listener()
    try:
        result = agent.probe_tcp("127.0.0.1", srv.getsockname()[1], 0.8)
    finally:
        for s in [srv, *fillers]:
            s.close()
    # the kernel alone would resend the SYN only after 1 s: too late for a 0.8 s check
    assert result["open"] is opened, result
