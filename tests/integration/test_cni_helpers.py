"""Shared scaffolding for the labkit-cni integration tests (no tests here).

Everything a test builds is named `lkt-cni-<random>-...` and removed by
`Scratch.cleanup()`, which the fixtures call even when a test fails.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LABKIT_CNI = str(REPO / ".venv" / "bin" / "labkit-cni")
REF_CNI = "/usr/lib/cni"

# Integration tests fail (not skip) without root: tests/integration/conftest.py says so once.
needs_root = pytest.mark.integration

SERVER = r"""
import socket, sys
host = sys.argv[2] if len(sys.argv) > 2 else "0.0.0.0"
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, int(sys.argv[1])))
s.listen(8)
print("ready", flush=True)
c, addr = s.accept()
print(addr[0], flush=True)
c.sendall(b"hello\n")
c.close()
"""

CLIENT = r"""
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
print(c.recv(100).decode().strip())
"""


class Scratch:
    """Namespaces, links, processes and dirs of one test, all torn down by cleanup()."""

    def __init__(self, executable: str = LABKIT_CNI, mode: str | None = None) -> None:
        self.prefix = f"lkt-cni-{secrets.token_hex(2)}"
        self.executable = executable  # the pip console script, or a launcher in a CNI bin dir
        self.mode = mode  # labkit-cni's mode in node_with_pods' config (None: the plugin's default, ptp)
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.dirs: list[str] = []

    # -- building ------------------------------------------------------------
    def netns(self, stem: str) -> str:
        name = f"{self.prefix}-{stem}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.namespaces.append(name)
        self.sh(f"/run/netns/{name}", "ip", "link", "set", "lo", "up")
        return f"/run/netns/{name}"

    def tmpdir(self) -> str:
        d = tempfile.mkdtemp(prefix=f"{self.prefix}-")
        self.dirs.append(d)
        return d

    def veth(self, ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
        subprocess.run(["ip", "link", "add", name_a, "netns", ns_a, "type", "veth", "peer",
                        "name", name_b, "netns", ns_b], check=True)

    def sh(self, ns: str, *argv: str, check: bool = True, timeout: float = 20,
           input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["nsenter", f"--net={ns}", "--", *argv], capture_output=True,
                              text=True, check=check, timeout=timeout, input=input)

    def spawn(self, ns: str, *argv: str) -> subprocess.Popen:
        p = subprocess.Popen(["nsenter", f"--net={ns}", "--", *argv], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    def tcp_server(self, ns: str, port: int, host: str = "0.0.0.0") -> subprocess.Popen:
        """A one-shot TCP server on `host` (IPv4's or IPv6's any address, "::") that prints the peer
        address it saw."""
        p = self.spawn(ns, sys.executable, "-c", SERVER, str(port), host)
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
        return p

    def tcp_client(self, ns: str, ip: str, port: int) -> str:
        return self.sh(ns, sys.executable, "-c", CLIENT, ip, str(port)).stdout.strip()

    def ping(self, ns: str, ip: str, count: int = 1) -> bool:
        r = self.sh(ns, "ping", "-c", str(count), "-W", "2", "-i", "0.2", ip, check=False)
        return r.returncode == 0

    # -- the plugin as a runtime runs it -------------------------------------
    def cni(self, command: str, conf, *, node: str | None = None, container_id: str | None = None,
            netns: str | None = None, ifname: str | None = "eth0", cni_path: str | None = REF_CNI,
            extra_env: dict | None = None, raw_stdin: bytes | None = None):
        """Run labkit-cni; return (exit code, parsed stdout or None, raw stdout, stderr)."""
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
        if command is not None:
            env["CNI_COMMAND"] = command
        for k, v in (("CNI_CONTAINERID", container_id), ("CNI_NETNS", netns),
                     ("CNI_IFNAME", ifname), ("CNI_PATH", cni_path)):
            if v is not None:
                env[k] = v
        env.update(extra_env or {})
        stdin = raw_stdin if raw_stdin is not None else json.dumps(conf).encode()
        argv = [self.executable] if node is None else ["nsenter", f"--net={node}", "--", self.executable]
        p = subprocess.run(argv, input=stdin, env=env, capture_output=True, timeout=60)
        out = p.stdout.decode()
        parsed = json.loads(out) if out.strip() else None
        return p.returncode, parsed, out, p.stderr.decode()

    # -- teardown --------------------------------------------------------------
    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            for f in (p.stdout, p.stderr):
                if f:
                    f.close()
        for name in reversed(self.namespaces):
            for _ in range(50):
                r = subprocess.run(["ip", "netns", "del", name], capture_output=True)
                if r.returncode == 0 or not os.path.exists(f"/run/netns/{name}"):
                    break
                time.sleep(0.1)
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)

    def leftovers(self) -> list[str]:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        return [line.split()[0] for line in out.splitlines() if line.startswith(self.prefix)]


def scratch_fixture():
    yield from scratch_with(LABKIT_CNI)


def scratch_with(executable: str, mode: str | None = None):
    s = Scratch(executable, mode)
    try:
        yield s
    finally:
        s.cleanup()
        assert not s.leftovers(), f"namespaces left over: {s.leftovers()}"


def node_with_pods(s: Scratch, n_pods: int, subnet: str = "10.244.7.0/24", **ipam):
    """A node namespace, `n_pods` empty pod namespaces and a labkit-cni config."""
    node = s.netns("node")
    pods = [s.netns(f"p{i}") for i in range(n_pods)]
    conf = {"cniVersion": "1.1.0", "name": f"{s.prefix}-net", "type": "labkit-cni",
            "ipam": {"subnet": subnet, "dataDir": f"{s.tmpdir()}/ipam", **ipam}}
    if s.mode:
        conf["mode"] = s.mode
    return node, pods, conf


class CNIServer:
    """A labkit CNI server on a private socket, and a launcher in a bin dir that calls it."""

    def __init__(self) -> None:
        from labkit.cni.install import install_launcher
        from labkit.cni.server import command, wait_serving

        self.dir = tempfile.mkdtemp(prefix="lkt-cni-srv-")
        self.socket = os.path.join(self.dir, "labkit-cni.sock")
        log_path = os.path.join(self.dir, "server.log")
        self.log = open(log_path, "w+b")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(command(self.socket), stdout=self.log, stderr=subprocess.STDOUT)
        self.launcher = str(install_launcher(os.path.join(self.dir, "bin"), socket=self.socket))
        wait_serving(self.socket, self.proc.pid, log_path, timeout=20)  # CNIError with the log's tail if not

    def log_text(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def served(self) -> int:
        """How many calls the server has answered (one log line each)."""
        return sum(" -> " in line for line in self.log_text().splitlines())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()
        assert not os.path.exists(self.socket), "the server left its socket behind"
        shutil.rmtree(self.dir, ignore_errors=True)


def cni_server_fixture():
    server = CNIServer()
    try:
        yield server
    finally:
        server.stop()
