"""labkit.agent over IPv6 loopback (::1): serve on both families, TCP/UDP/HTTP probes, pings (ICMP and
ICMPv6 echo on raw sockets), AAAA lookups and a nameserver reached over IPv6."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit import agent
from tests.unit.test_verify_agent import SEARCH, FakeDNS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server() -> Iterator[dict]:
    """An in-process `serve` on every address (0.0.0.0 and ::), answering 'pod-6'."""
    stop, listening = threading.Event(), threading.Event()
    ready: list[str] = []

    def report(line: str) -> None:
        ready.append(line)
        listening.set()

    thread = threading.Thread(target=agent.serve, args=([0], [0], "pod-6", "0.0.0.0", report, stop), daemon=True)
    thread.start()
    assert listening.wait(5), "the agent never said it was serving"
    info = json.loads(ready[0])
    yield {"tcp": info["tcp"][0], "udp": info["udp"][0], "ready": info}
    stop.set()
    thread.join(5)


def test_serve_answers_both_families_on_the_ports_it_reports(server: dict) -> None:
    assert len(server["ready"]["tcp"]) == len(server["ready"]["udp"]) == 1  # one port each, as before
    for host in ("127.0.0.1", "::1"):
        assert agent.probe_tcp(host, server["tcp"], 1) == {"open": True, "reason": "connected (pod-6)",
                                                           "reply": "pod-6"}
        assert agent.probe_udp(host, server["udp"], 1) == {"open": True, "reason": "reply (pod-6)", "reply": "pod-6"}


def test_closed_ipv6_ports_are_refused() -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.bind(("::1", 0))
        tcp_port = s.getsockname()[1]
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", 0))
        udp_port = s.getsockname()[1]
    assert agent.probe("tcp", "::1", tcp_port, 1) == {"open": False, "reason": "connection refused", "reply": None}
    assert agent.probe("udp", "::1", udp_port, 1) == {"open": False, "reason": "port unreachable", "reply": None}


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_ping_both_families(host: str) -> None:
    result = agent.ping(host, 1.0)
    assert result == {"open": True, "reason": f"echo reply from {host}"}


def test_pings_at_once_tell_their_replies_apart() -> None:
    """Every raw socket sees every echo reply; each ping takes only its own identifier's."""
    results: list[dict] = []
    threads = [threading.Thread(target=lambda h=h: results.append(agent.ping(h, 1.0)))
               for h in ["::1", "127.0.0.1"] * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and all(r["open"] for r in results)


def test_unanswered_and_unroutable_pings() -> None:
    """In a network namespace of the test's own (unshare -n): echo requests dropped by nftables time out,
    an address without a route is unreachable at once. Nothing leaves the namespace."""
    script = (
        "ip link set lo up && "
        "nft add table inet t && "
        "nft add chain inet t in '{ type filter hook input priority 0; }' && "
        "nft add rule inet t in icmpv6 type echo-request drop && "
        "nft add rule inet t in icmp type echo-request drop && "
        f"{sys.executable} -c 'import json; from labkit import agent; "
        "print(json.dumps([agent.ping(h, 0.3) for h in (\"::1\", \"127.0.0.1\", \"fd00:10:244::99\")]))'"
    )
    done = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=30,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    v6, v4, unroutable = json.loads(done.stdout)
    assert v6 == v4 == {"open": False, "reason": "no echo reply in 0.3s"}
    assert unroutable == {"open": False, "reason": "network unreachable"}


def test_http_over_ipv6_sends_a_bracketed_host() -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as listener:
        listener.bind(("::1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        seen: list[bytes] = []

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                seen.append(conn.recv(4096))
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        result = agent.http_get("::1", port, {"path": "/x"}, 1.0)
        thread.join(2)
    assert result["http_status"] == 200 and result["body"] == "hello"
    assert b"GET /x HTTP/1.1\r\nHost: [::1]\r\n" in seen[0]


@pytest.fixture
def dual_dns() -> Iterator[FakeDNS]:
    server = FakeDNS({
        "web.default.svc.cluster.local.": ["10.96.0.20", "fd00:10:96::14"],
        "v6.default.svc.cluster.local.": ["fd00:10:96::20"],
        "v4.default.svc.cluster.local.": ["10.96.0.30"],
        "local.default.svc.cluster.local.": ["::1"],
    }, host="::1")
    yield server
    server.close()


def test_a_nameserver_over_ipv6_and_aaaa_records(dual_dns: FakeDNS) -> None:
    assert dual_dns.address.startswith("[::1]:")
    res = agent.resolve("web", dual_dns.address, SEARCH, 5, families=[6])
    assert (res["status"], res["addresses"]) == ("NOERROR", ["fd00:10:96::14"])
    assert dual_dns.types == ["AAAA"]
    assert agent.resolve("web", dual_dns.address, SEARCH, 5)["addresses"] == ["10.96.0.20"]  # A alone, by default


def test_both_families_in_the_order_asked(dual_dns: FakeDNS) -> None:
    assert agent.resolve("web", dual_dns.address, SEARCH, 5, families=[6, 4])["addresses"] == [
        "fd00:10:96::14", "10.96.0.20"]
    assert agent.resolve("web", dual_dns.address, SEARCH, 5, families=[4, 6])["addresses"] == [
        "10.96.0.20", "fd00:10:96::14"]
    # a name with only one family's records answers with those; NODATA only when it has none asked for
    assert agent.resolve("v6", dual_dns.address, SEARCH, 5, families=[4, 6])["addresses"] == ["fd00:10:96::20"]
    assert agent.resolve("v4", dual_dns.address, SEARCH, 5, families=[6])["status"] == "NODATA"


def test_nxdomain_is_not_asked_again_for_the_other_type(dual_dns: FakeDNS) -> None:
    res = agent.resolve("nope.default.svc.cluster.local.", dual_dns.address, [], 5, families=[4, 6])
    assert res["status"] == "NXDOMAIN" and dual_dns.types == ["A"]


def test_the_nameserver_forms() -> None:
    assert agent._server("10.96.0.10") == ("10.96.0.10", 53)
    assert agent._server("10.96.0.10:5353") == ("10.96.0.10", 5353)
    assert agent._server("fd00:10:96::a") == ("fd00:10:96::a", 53)
    assert agent._server("[fd00:10:96::a]:5353") == ("fd00:10:96::a", 5353)
    assert agent._server("[fd00:10:96::a]") == ("fd00:10:96::a", 53)


def test_probe_many_over_ipv6(server: dict, dual_dns: FakeDNS) -> None:
    dns_conf = {"nameserver": dual_dns.address, "search": SEARCH, "ndots": 5}
    requests = [
        {"id": 0, "op": "connect", "protocol": "tcp", "host": "::1", "port": server["tcp"], "timeout": 1},
        {"id": 1, "op": "connect", "protocol": "tcp", "host": "local", "port": server["tcp"], "timeout": 1,
         "families": [6], "dns": dns_conf},
        {"id": 2, "op": "ping", "host": "::1", "timeout": 1},
        {"id": 3, "op": "ping", "host": "local", "timeout": 1, "families": [4, 6], "dns": dns_conf},
        {"id": 4, "op": "resolve", "name": "web", "timeout": 1, "families": [6], "dns": dns_conf},
        {"id": 5, "op": "trace", "protocol": "icmp", "host": "::1", "port": 0, "sport": 40123, "tos": 0x1c,
         "timeout": 1},
        {"id": 6, "op": "trace", "protocol": "tcp", "host": "::1", "port": server["tcp"], "sport": 40124,
         "tos": 0x1c, "timeout": 1},
    ]
    out = io.StringIO()
    agent.probe_many(io.StringIO("".join(json.dumps(r) + "\n" for r in requests)), out)
    results = {r["id"]: r for r in map(json.loads, out.getvalue().splitlines())}
    assert results[0]["open"] and results[0]["reply"] == "pod-6"
    assert results[1]["open"] and results[1]["address"] == "::1"
    assert results[2]["open"] and results[2]["reason"] == "echo reply from ::1"
    assert results[3]["open"] and results[3]["addresses"] == ["::1"]
    assert results[4]["addresses"] == ["fd00:10:96::14"]
    assert results[5] == {"id": 5, "open": True, "reason": "echo reply from ::1", "elapsed": results[5]["elapsed"]}
    assert results[6]["open"] and results[6]["reason"] == "connected"
