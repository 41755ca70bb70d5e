"""The server's command line and table management, in-process (no sockets)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import dns.message
import pytest

from labkit.dns import server
from labkit.dns.records import ConfigError, DnsConfig, Service


def test_command_is_an_argv():
    argv = server.command("/run/x/dns.json", "10.244.1.9", 53, workers=1, pidfile="/run/x/p",
                          python="/usr/bin/python3")
    assert argv[:2] == ["/usr/bin/python3", "-IS"] and argv[2] == "-c"  # lean: no `site` (labkit.lean)
    assert "from labkit.dns.server import main" in argv[3]
    assert argv[4:] == ["--config", "/run/x/dns.json", "--listen", "10.244.1.9", "--port", "53",
                        "--workers", "1", "--pidfile", "/run/x/p"]
    assert server.command("c", "::1")[-4:] == ["--listen", "::1", "--port", "53"]
    # a dual-stack pod: one --listen per address, in order
    assert server.command("c", ["10.244.1.9", "fd00:10:244:1::9"])[-6:] == [
        "--listen", "10.244.1.9", "--listen", "fd00:10:244:1::9", "--port", "53"]


@pytest.mark.parametrize("argv, needle", [
    ([], "--config and --listen are required"),
    (["--config", "x"], "--config and --listen are required"),
    (["--config", "x", "--listen", "not-an-ip"], "--listen an IP address"),
    (["--config", "x", "--listen", "10.0.0.1", "--listen", "fd00::1::2"], "--listen an IP address"),
    (["--config", "x", "--listen", "fe80::1%eth0"], "--listen an IP address"),
    (["--config", "x", "--listen", "10.0.0.1", "--listen"], "needs a value"),
    (["--config", "x", "--listen", "127.0.0.1", "--port", "http"], "must be numbers"),
    (["--config", "x", "--listen", "127.0.0.1", "--colour"], "unknown argument"),
    (["--config"], "needs a value"),
])
def test_bad_arguments(argv, needle, capsys):
    assert server.main(argv) == 2
    assert needle in capsys.readouterr().err


def test_help(capsys):
    assert server.main(["--help"]) == 0
    assert "usage:" in capsys.readouterr().out


def test_missing_config_exits_2(tmp_path, capsys):
    assert server.main(["--config", str(tmp_path / "nope.json"), "--listen", "127.0.0.1",
                        "--port", "1"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_server_module_imports_nothing_heavy():
    code = ("import sys, labkit.dns.server; "
            "print(' '.join(m for m in ('dns', 'pydantic', 'dataclasses', 'typing', 'asyncio') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == []


def test_failed_reload_keeps_the_records(tmp_path):
    path = tmp_path / "dns.json"
    DnsConfig(services=[Service("a", "b", "ClusterIP", "10.96.0.5")]).dump(str(path))
    state = server.State(str(path))
    state.load()
    before = dict(state.entries)
    path.write_text('{"services": [{"namespace": "a"}]}')
    with pytest.raises(ConfigError):
        state.load()
    assert state.entries == before
    q = dns.message.make_query("b.a.svc.cluster.local.", "A").to_wire()
    r = dns.message.from_wire(server.answer_query(state, q, tcp=False))
    assert r.answer[0][0].address == "10.96.0.5"


def test_reload_replaces_learnt_and_cached_answers(tmp_path):
    path = tmp_path / "dns.json"
    DnsConfig(services=[Service("a", "b", "ClusterIP", "10.96.0.5")]).dump(str(path))
    state = server.State(str(path))
    state.load()
    q = dns.message.make_query("new.a.svc.cluster.local.", "A").to_wire()
    assert dns.message.from_wire(server.answer_query(state, q, tcp=False)).rcode() == 3
    DnsConfig(services=[Service("a", "new", "ClusterIP", "10.96.0.6")]).dump(str(path))
    state.load()
    assert state.exact[q[2:]].endswith(bytes([10, 96, 0, 6]))
    r = dns.message.from_wire(server.answer_query(state, q, tcp=False))
    assert r.answer[0][0].address == "10.96.0.6"


def test_reload_of_unchanged_content_is_free(tmp_path):
    path = tmp_path / "dns.json"
    DnsConfig(services=[Service("a", "b", "ClusterIP", "10.96.0.5")]).dump(str(path))
    state = server.State(str(path))
    assert state.load() is True
    table = dict(state.entries)
    assert state.load() is False and state.entries == table
    DnsConfig(services=[Service("a", "b", "ClusterIP", "10.96.0.6")]).dump(str(path))
    assert state.load() is True and state.entries != table


def test_tcp_limits_per_client_and_in_total():
    limits = server.TcpLimits(total=5, per_client=2)
    assert limits.admit("10.0.0.1") and limits.admit("10.0.0.1")
    assert not limits.admit("10.0.0.1")                      # a third from the same pod
    assert limits.admit("10.0.0.2") and limits.admit("10.0.0.3") and limits.admit("10.0.0.3")
    assert not limits.admit("10.0.0.4")                      # the whole server is full
    limits.release("10.0.0.1")
    assert limits.admit("10.0.0.4") and not limits.admit("10.0.0.5")
    for client in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.3", "10.0.0.4"):
        limits.release(client)
    assert limits.active == 0 and limits.clients == {}


def _trickle(sock, data: bytes, pause: float) -> threading.Thread:
    def run():
        for i in range(len(data)):
            try:
                sock.send(data[i:i + 1])
            except OSError:
                return
            time.sleep(pause)    # the attack's pace, not a wait for readiness
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_message_must_arrive_whole_within_its_budget():
    """One byte at a time, each well within the idle timeout, no longer holds a
    connection: the whole message has a deadline from its first byte."""
    msg = dns.message.make_query("web.default.svc.cluster.local.", "A").to_wire()
    framed = len(msg).to_bytes(2, "big") + msg
    a, b = socket.socketpair()
    with a, b:
        _trickle(a, framed, 0.05)
        with pytest.raises(TimeoutError):
            server.read_message(b, idle=5, budget=0.3)
    a, b = socket.socketpair()
    with a, b:
        a.sendall(framed[:1])
        _trickle(a, framed[1:], 0)
        assert server.read_message(b, idle=5, budget=30) == msg
        a.close()
        assert server.read_message(b, idle=5, budget=30) is None   # the client is done
    a, b = socket.socketpair()
    with a, b, pytest.raises(TimeoutError):
        server.read_message(b, idle=0.05, budget=30)                # idle between messages


def _cluster_topology(tmp_path, dns: str):
    path = tmp_path / "topo.yaml"
    path.write_text(f"name: dnsw\ncluster:\n  dns: {dns}\ntopology:\n  nodes:\n    cp: {{kind: k8s-node}}\n")
    return path


def test_cluster_dns_workers_setting(tmp_path):
    """The DNS pod's process model: one worker per two CPUs unless the topology fixes the count."""
    from labkit.errors import InputError
    from labkit.topology import load_plan

    assert load_plan(_cluster_topology(tmp_path, "{ip: 10.96.0.10}")).cluster.dns_workers is None
    assert load_plan(_cluster_topology(tmp_path, "{workers: auto}")).cluster.dns_workers is None
    assert load_plan(_cluster_topology(tmp_path, "{workers: 3}")).cluster.dns_workers == 3
    for bad in ("0", "65", "many", "true", "1.5"):
        with pytest.raises(InputError) as e:
            load_plan(_cluster_topology(tmp_path, f"{{workers: {bad}}}"))
        assert "workers is auto (one per two CPUs) or a number from 1 to 64" in str(e.value)
        assert "topo.yaml:3: cluster.dns.workers: " in str(e.value)
    argv = server.command("c.json", "10.244.0.2", 53, workers=None)
    assert "--workers" not in argv           # the server's default


def test_default_workers_leave_cores_to_the_pods(monkeypatch):
    for cpus, workers in ((1, 1), (2, 1), (3, 1), (8, 4), (64, server.MAX_AUTO_WORKERS)):
        monkeypatch.setattr(server.os, "sched_getaffinity", lambda _pid, n=cpus: set(range(n)))
        assert server.default_workers() == workers


def test_every_listen_address_is_served_and_a_bad_one_fails_them_all(tmp_path, monkeypatch):
    """`main` hands every --listen to `run`, in order; binding stops at the first address that
    cannot be had, naming it, and leaves no socket of the others open."""
    seen = []
    monkeypatch.setattr(server, "run", lambda config, listens, *rest: seen.append(listens) or 0)
    assert server.main(["--config", "c", "--listen", "127.0.0.1", "--listen", "::1"]) == 0
    assert seen == [["127.0.0.1", "::1"]]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(OSError) as e:
            server._bind(["127.0.0.2", "127.0.0.1"], port, 2)
        assert "127.0.0.1" in e.value.strerror
    # 127.0.0.2's sockets were closed: it binds again at once
    udps, tcps = server._bind(["127.0.0.2"], port, 1)
    for s in (*udps[0], *tcps):
        s.close()


def test_an_ipv6_address_that_never_comes_fails_after_the_wait(monkeypatch):
    """EADDRNOTAVAIL on an IPv6 address is waited out (duplicate address detection) for TENTATIVE_WAIT,
    then fails naming the address; on an IPv4 address at once."""
    monkeypatch.setattr(server, "TENTATIVE_WAIT", 0.3)
    for address, least in (("fd00:5e::99", 0.3), ("192.0.2.99", 0.0)):
        start = time.monotonic()
        with pytest.raises(OSError) as e:
            server._bind([address], 5399, 1)
        waited = time.monotonic() - start
        assert least <= waited < least + 0.25 and address in e.value.strerror, (address, waited)
