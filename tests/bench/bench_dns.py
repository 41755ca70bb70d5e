"""Benchmark: labkit's cluster DNS server against dnsmasq, under dnsperf.

Both serve the same few hundred A records (ClusterIP services) on their own loopback
address, and dnsperf sends both the same query file with the same options, in turns. Nothing is
written outside a temporary directory; both servers are stopped
afterwards.

    python tests/bench/bench_dns.py [SECONDS]      # prints the result as JSON
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from tests.netutil import free_endpoint as _free_endpoint

REPO = Path(__file__).resolve().parents[2]
SERVICES = 400
# The headline profile: several clients, as many pods' resolvers are. The second one
# is dnsperf's defaults (one client socket, 100 queries outstanding: latency-bound).
DNSPERF_OPTS = ["-c", "8", "-T", "2", "-q", "200"]
PROFILES = {"clients8": DNSPERF_OPTS, "dnsperf_defaults": []}


def _query(name: str) -> bytes:
    wire = b"".join(bytes((len(x),)) + x.encode() for x in name.split(".")) + b"\x00"
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + wire + b"\x00\x01\x00\x01"


def _wait_answering(addr: str, port: int, name: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 10
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
            s.sendto(_query(name), (addr, port))
            try:
                if s.recv(512)[3] & 0xF == 0:
                    return
            except OSError:
                continue
    raise RuntimeError(f"{proc.args} did not answer")


def _dnsperf(addr: str, port: int, queries: Path, seconds: float, opts: list[str]) -> dict:
    out = subprocess.run(
        ["dnsperf", "-s", addr, "-p", str(port), "-d", str(queries), "-l", str(seconds),
         *opts],
        capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))
    lost = int(re.search(r"Queries lost:\s+(\d+)", out).group(1))
    noerror = re.search(r"NOERROR (\d+)", out)
    return {"qps": qps, "lost": lost, "noerror": int(noerror.group(1)) if noerror else 0}


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bench_dns(seconds: float = 10) -> dict:
    """dnsperf for `seconds` against each server per profile (in two halves, ABBA
    order). Returns the headline profile's queries/s for both servers and the ratio
    labkit/dnsmasq at the top level, and every profile's figures under "profiles"."""
    for tool in ("dnsperf", "dnsmasq"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed")
    sys.path.insert(0, str(REPO))
    from labkit.dns.records import DnsConfig, Endpoint, Service, ServicePort
    from labkit.dns.server import command

    tmp = Path(tempfile.mkdtemp(prefix="labkit-bench-dns-"))
    procs: list[subprocess.Popen] = []
    try:
        services, hosts, names = [], [], []
        for i in range(SERVICES):
            ip = f"10.96.{1 + i // 250}.{1 + i % 250}"
            ns = ("default", "prod", "kube-system", "shop")[i % 4]
            name = f"svc-{i}.{ns}.svc.cluster.local"
            services.append(Service(ns, f"svc-{i}", "ClusterIP", ip,
                                    ports=[ServicePort(80, "http")],
                                    endpoints=[Endpoint(f"10.244.{i // 250}.{1 + i % 250}")]))
            hosts.append(f"{ip} {name}\n")
            names.append(f"{name} A\n")
        config = tmp / "dns.json"
        DnsConfig(services=services).dump(str(config))
        (tmp / "hosts").write_text("".join(hosts))
        queries = tmp / "queries.txt"
        queries.write_text("".join(names))

        lk_addr, lk_port = _free_endpoint()
        dm_addr, dm_port = _free_endpoint()
        workers = os.cpu_count() or 1
        lk = subprocess.Popen(command(str(config), lk_addr, lk_port, workers=workers),
                              cwd=REPO, stderr=subprocess.DEVNULL)
        procs.append(lk)
        dm = subprocess.Popen(
            ["dnsmasq", "-k", "-C", "/dev/null", "--no-resolv", "--no-hosts",
             f"--addn-hosts={tmp / 'hosts'}", f"--listen-address={dm_addr}",
             "--bind-interfaces", f"--port={dm_port}", "--pid-file=", "--user=root",
             "--group=root", "--no-dhcp-interface=lo"],
            stderr=subprocess.DEVNULL)
        procs.append(dm)
        first = names[0].split()[0]
        _wait_answering(lk_addr, lk_port, first, lk)
        _wait_answering(dm_addr, dm_port, first, dm)

        # Per profile, ABBA rounds of half the time each: drift in the machine's load
        # (other jobs) hits both servers alike.
        half = seconds / 2
        profiles = {}
        for profile, opts in PROFILES.items():
            runs: dict[str, list[dict]] = {"labkit": [], "dnsmasq": []}
            for who in ("labkit", "dnsmasq", "dnsmasq", "labkit"):
                addr, port = (lk_addr, lk_port) if who == "labkit" else (dm_addr, dm_port)
                runs[who].append(_dnsperf(addr, port, queries, half, opts))
            lk_qps, dm_qps = (sum(r["qps"] for r in runs[w]) / 2 for w in ("labkit", "dnsmasq"))
            profiles[profile] = {
                "dnsperf": " ".join(opts) or "(defaults)",
                "labkit_qps": round(lk_qps),
                "dnsmasq_qps": round(dm_qps),
                "ratio": round(lk_qps / dm_qps, 3) if dm_qps else None,
                "labkit_lost": sum(r["lost"] for r in runs["labkit"]),
                "dnsmasq_lost": sum(r["lost"] for r in runs["dnsmasq"]),
                "labkit_noerror": sum(r["noerror"] for r in runs["labkit"]),
                "dnsmasq_noerror": sum(r["noerror"] for r in runs["dnsmasq"]),
            }
        head = profiles["clients8"]
        return {"seconds": seconds, "names": SERVICES, "workers": workers,
                "labkit_qps": head["labkit_qps"], "dnsmasq_qps": head["dnsmasq_qps"],
                "ratio": head["ratio"], "profiles": profiles}
    finally:
        for p in procs:
            _stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(bench_dns(float(sys.argv[1]) if len(sys.argv) > 1 else 10), indent=2))
