"""The server's command line and table management, in-process (no sockets)."""

from __future__ import annotations

import subprocess
import sys

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


@pytest.mark.parametrize("argv, needle", [
    ([], "--config and --listen are required"),
    (["--config", "x"], "--config and --listen are required"),
    (["--config", "x", "--listen", "not-an-ip"], "--listen an IP address"),
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
