"""The labkit CNI server and the launcher that calls it: where calls run, what happens when the
server is missing, stale or fed garbage, and that it cleans up after itself. (The whole conformance
suite also runs through it: test_cni_conformance.py.)"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys

import pytest

from labkit.cni.server import command

from .test_cni_helpers import CNIServer, cni_server_fixture, needs_root, node_with_pods, scratch_with

pytestmark = [pytest.mark.integration, needs_root]

server = pytest.fixture(cni_server_fixture)


@pytest.fixture
def scratch(server):
    yield from scratch_with(server.launcher)


def test_calls_go_to_the_server_in_the_callers_namespace(server, scratch):
    s = scratch
    node, (pod,), conf = node_with_pods(s, 1)
    rc, out, raw, err = s.cni("ADD", conf, node=node, container_id="srv1", netns=pod)
    assert rc == 0, raw + err
    assert "ADD srv1 eth0 -> 0" in server.log_text()
    host_veth = out["interfaces"][0]["name"]
    assert s.sh(node, "ip", "link", "show", host_veth, check=False).returncode == 0  # the node's, not the host's
    assert not os.path.exists(f"/sys/class/net/{host_veth}")
    rc, out, raw, err = s.cni("DEL", conf, node=node, container_id="srv1", netns=pod)
    assert (rc, raw) == (0, "") and server.served() == 2


def test_without_a_server_the_launcher_runs_the_plugin_in_place(server, scratch):
    s = scratch
    before = server.served()
    rc, out, raw, _ = s.cni("VERSION", None, raw_stdin=b"", extra_env={"LABKIT_CNI_SOCKET": ""})
    assert rc == 0 and "1.1.0" in out["supportedVersions"]
    assert server.served() == before
    missing = os.path.join(server.dir, "nothing-here.sock")
    rc, out, raw, _ = s.cni("VERSION", None, raw_stdin=b"", extra_env={"LABKIT_CNI_SOCKET": missing})
    assert rc == 0 and server.served() == before


def test_a_stale_socket_falls_back_to_running_in_place(scratch):
    """A server killed with SIGKILL leaves its socket file; the launcher must not hang or fail on it."""
    s = scratch
    dead = CNIServer()
    try:
        dead.proc.kill()
        dead.proc.wait()
        assert os.path.exists(dead.socket)
        s.executable = dead.launcher
        node, (pod,), conf = node_with_pods(s, 1)
        rc, out, raw, err = s.cni("ADD", conf, node=node, container_id="stale1", netns=pod)
        assert rc == 0, raw + err
        rc, _, raw, err = s.cni("DEL", conf, node=node, container_id="stale1", netns=pod)
        assert rc == 0, raw + err
        # and a new server takes the stale socket over
        fresh = subprocess.Popen(command(dead.socket), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            assert _answer(dead.socket, b"").startswith(b"1\n")
        finally:
            fresh.terminate()
            fresh.wait(timeout=10)
    finally:
        dead.log.close()
        s.dirs.append(dead.dir)


def _answer(path: str, data: bytes, *, timeout: float = 20) -> bytes:
    """Connect (retrying while the server starts), send data, half-close, read the reply."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            c.connect(path)
            break
        except OSError:
            c.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    with c:
        c.settimeout(timeout)
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := c.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_garbage_and_hangups_get_errors_and_the_server_keeps_serving(server):
    # no CNI_COMMAND in this (the test's) environment, then garbage: a CNI error each, exit code 1
    reply = _answer(server.socket, b"\xff\x00garbage" * 1000)
    code, _, body = reply.partition(b"\n")
    assert code == b"1" and b'"code": 4' in body and b"CNI_COMMAND" in body
    too_big = _answer(server.socket, b"{" * (2 << 20))
    assert too_big.startswith(b"1\n") and b"exceeds" in too_big
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(server.socket)
    c.close()  # a caller that hangs up at once
    env = dict(os.environ, CNI_COMMAND="VERSION")
    version = subprocess.run([server.launcher], input=b"", env=env, capture_output=True, timeout=20)
    assert version.returncode == 0 and b"supportedVersions" in version.stdout
    assert server.proc.poll() is None


def test_the_socket_is_private_and_a_second_server_refuses_it(server):
    assert stat.S_IMODE(os.stat(server.socket).st_mode) & 0o077 == 0  # only its owner (root) may connect
    second = subprocess.run(command(server.socket), capture_output=True, text=True, timeout=30)
    assert second.returncode != 0 and "already being served" in second.stderr
    assert server.proc.poll() is None and os.path.exists(server.socket)


def test_server_entry_point_needs_a_socket():
    r = subprocess.run([sys.executable, "-m", "labkit.cni.server"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--socket" in r.stderr


def test_the_cli_installs_a_launcher_and_serves_it(scratch, tmp_path):
    """`labkit cni serve` and `labkit cni install`, as someone wiring their own runtime would."""
    import time

    sock, bindir = str(tmp_path / "cni.sock"), str(tmp_path / "bin")
    cli = [sys.executable, "-m", "labkit.cli", "cni"]
    installed = subprocess.run([*cli, "install", bindir, "--socket", sock], capture_output=True, text=True,
                               timeout=60)
    assert installed.returncode == 0 and installed.stdout.strip() == f"wrote {bindir}/labkit-cni", installed.stderr
    served = subprocess.Popen([*cli, "serve", "--socket", sock], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    scratch.procs.append(served)
    deadline = time.monotonic() + 30
    while not os.path.exists(sock):
        assert served.poll() is None and time.monotonic() < deadline, served.stderr.read()
        time.sleep(0.02)
    s = scratch
    s.executable = f"{bindir}/labkit-cni"
    node, (pod,), conf = node_with_pods(s, 1)
    rc, out, raw, err = s.cni("ADD", conf, node=node, container_id="cli1", netns=pod)
    assert rc == 0 and out["ips"][0]["address"].startswith("10.244.7."), raw + err
    rc, _, raw, err = s.cni("DEL", conf, node=node, container_id="cli1", netns=pod)
    assert rc == 0, raw + err
    served.terminate()
    served.wait(timeout=10)
    assert "ADD cli1 eth0 -> 0" in served.stderr.read() and not os.path.exists(sock)


def test_a_deeply_nested_config_gets_a_cni_error_and_the_server_keeps_serving(server):
    env = dict(os.environ, CNI_COMMAND="VERSION")
    for nested in (b"[" * 100_000, b'{"a": ' * 5_000 + b"1" + b"}" * 5_000):
        r = subprocess.run([server.launcher], input=nested, env=env, capture_output=True, timeout=20)
        assert r.returncode == 1 and b'"code": 6' in r.stdout and b"nested deeper than" in r.stdout, r
    assert server.proc.poll() is None
    version = subprocess.run([server.launcher], input=b"", env=env, capture_output=True, timeout=20)
    assert version.returncode == 0 and b"supportedVersions" in version.stdout


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        return int(next(line.split()[1] for line in fh if line.startswith("Threads:")))


def test_idle_connections_hold_no_thread_each_are_closed_after_the_timeout_and_calls_still_go_through(tmp_path):
    from labkit.cni.server import wait_serving

    sock, log = str(tmp_path / "cni.sock"), str(tmp_path / "server.log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(command(sock, "--workers", "2", "--timeout", "1"), stdout=out,
                                stderr=subprocess.STDOUT)
    idle: list[socket.socket] = []
    try:
        wait_serving(sock, proc.pid, log, timeout=20)
        for _ in range(6):  # three times the pool: connect, send nothing
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(sock)
            idle.append(c)
        assert _threads(proc.pid) == 3  # the accepting thread and the two workers, however many callers
        env = dict(os.environ, CNI_COMMAND="VERSION")
        from labkit.cni.install import install_launcher

        launcher = str(install_launcher(tmp_path / "bin", socket=sock, compile_bytecode=False))
        version = subprocess.run([launcher], input=b"", env=env, capture_output=True, timeout=60)
        assert version.returncode == 0 and b"supportedVersions" in version.stdout, version
        for c in idle:  # each got its error and was closed (recv returns EOF after the reply)
            c.settimeout(60)
            chunks = []
            while chunk := c.recv(65536):
                chunks.append(chunk)
            reply = b"".join(chunks)
            assert reply.startswith(b"1\n") and b"no complete config on stdin within 1 s" in reply, reply
        assert proc.poll() is None and _threads(proc.pid) == 3
    finally:
        for c in idle:
            c.close()
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_replaces_only_a_stale_socket(server, tmp_path):
    cli = [sys.executable, "-m", "labkit.cli", "cni", "serve", "--socket"]
    regular = tmp_path / "not-a-socket"
    regular.write_text("keep me\n")
    r = subprocess.run([*cli, str(regular)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "exists and is not a socket; not replacing it" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and regular.read_text() == "keep me\n"
    folder = tmp_path / "a-dir"
    folder.mkdir()
    r = subprocess.run(command(str(folder)), capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "is not a socket" in r.stderr and folder.is_dir()
    r = subprocess.run([*cli, server.socket], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "already being served" in r.stderr and "Traceback" not in r.stderr
    assert server.proc.poll() is None and stat.S_ISSOCK(os.lstat(server.socket).st_mode)


def test_server_options_are_checked():
    for bad in (["--socket", "/x", "--workers", "0"], ["--socket", "/x", "--timeout", "nan"],
                ["--socket", "/x", "--workers", "two"], ["--socket", "/x", "--socket", "/y"], ["--workers", "2"]):
        r = subprocess.run([sys.executable, "-m", "labkit.cni.server", *bad], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 2 and "usage:" in r.stderr, (bad, r.stderr)
