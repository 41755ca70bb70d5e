"""The cluster's front door on kube-edge.yaml: HTTP requests per second and p50/p99 latency from the outside
client `ext` through the LoadBalancer address (MetalLB BGP mode: the ToR's ECMP route to the nodes) and
the ingress proxy (HAProxy) to app-a's pods, the same through a NodePort, against the same client
straight to an app-a pod by its own address (bgp backend: routed through the ToR), in the same run; and
`labkit apply` of a changed HTTPRoute (the canary's weights 100/0 -> 0/100) until the proxy serves it.

The client is Python in ext's network namespace: one connection per request (the apps answer HTTP/1.0
and close, as socat runs a shell per connection), `CONCURRENCY` threads for the rate, one at a time
for the latency. The figures are the lab's, not HAProxy's: both paths pay the same per-request shell.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from labkit import lab
from labkit.progress import Progress

ROOT = Path(__file__).resolve().parents[2]
CONCURRENCY = 8

LOAD = r"""
import json, socket, sys, threading, time
address, port, host, count, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
request = f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
def one():
    started = time.perf_counter()
    s = socket.create_connection((address, port), timeout=10)
    s.sendall(request)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    if b" 200 " not in data.split(b"\n", 1)[0]:
        raise SystemExit(f"not 200: {data[:80]!r}")
    return time.perf_counter() - started
latencies = [one() for _ in range(count)]
done = []
def worker():
    for _ in range(count // threads):
        done.append(one())
started = time.perf_counter()
pool = [threading.Thread(target=worker) for _ in range(threads)]
for t in pool: t.start()
for t in pool: t.join()
print(json.dumps({"latencies": latencies, "rate": len(done) / (time.perf_counter() - started)}))
"""

WATCH = r"""
import socket, sys, time
address, port, want = sys.argv[1], int(sys.argv[2]), sys.argv[3]
print("ready", flush=True)
sys.stdin.readline()
started = time.perf_counter()
while True:
    s = socket.create_connection((address, port), timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: canary.gw.test\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    if want.encode() in data:
        print(time.perf_counter() - started, flush=True)
        break
"""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _load(netns_path: str, address: str, port: int, host: str, count: int) -> dict:
    proc = subprocess.run(["nsenter", f"--net={netns_path}", "--", sys.executable, "-c", LOAD, address, str(port),
                           host, str(count), str(CONCURRENCY)], capture_output=True, text=True, check=True)
    found = json.loads(proc.stdout)
    ms = [v * 1000 for v in found["latencies"]]
    return {"req/s": round(found["rate"], 1), "p50 ms": round(statistics.median(ms), 2),
            "p99 ms": round(_percentile(ms, 0.99), 2)}


def bench_ingress(count: int = 400, applies: int = 3) -> dict[str, dict]:
    """{"http": rows of req/s, p50 and p99 per path and their ratio, "apply": the reload's times (ms)}."""
    name = f"bing{os.getpid() % 10000}"
    folder = Path(tempfile.mkdtemp(prefix="bench-ingress-"))
    shutil.copytree(ROOT / "topologies" / "workloads", folder / "workloads")
    topo = folder / "kube-edge.yaml"
    topo.write_text((ROOT / "topologies" / "kube-edge.yaml").read_text())
    workloads = folder / "workloads" / "kube-edge.yaml"
    original = workloads.read_text()
    lab.up(str(topo), progress=Progress(quiet=True), name=name)
    try:
        status = lab.status(name)[0]
        ext = next(n for n in status["nodes"] if n["name"] == "ext")["netns_path"]
        w1 = next(n for n in status["nodes"] if n["name"] == "w1")["mgmt_ipv4"].split("/")[0]
        pod = next(p for p in status["pods"] if p["name"].startswith("app-a-"))["ip"].split("/")[0]
        front = next(s for s in status["services"] if s["name"] == "haproxy")["load_balancer"]["ip"]
        rows = {"ext -> pod (direct, its own IP)": _load(ext, pod, 8080, "app-a", count),
                "ext -> LB (BGP) -> HAProxy -> pod": _load(ext, front, 80, "shop.example.test", count),
                "ext -> NodePort -> HAProxy -> pod": _load(ext, w1, 32080, "shop.example.test", count)}
        direct, proxied = rows["ext -> pod (direct, its own IP)"], rows["ext -> LB (BGP) -> HAProxy -> pod"]
        rows["overhead (LB + proxy / direct)"] = {
            "req/s": round(direct["req/s"] / proxied["req/s"], 2),
            "p50 ms": round(proxied["p50 ms"] / direct["p50 ms"], 2),
            "p99 ms": round(proxied["p99 ms"] / direct["p99 ms"], 2)}
        gateway = next(s for s in status["services"] if s["name"] == "haproxy")["ports"][-1]["node_port"]
        served, applied = [], []
        for i in range(applies):
            to_b = i % 2 == 0
            text = original if not to_b else original.replace(
                "{name: app-a, port: 80, weight: 100}", "{name: app-a, port: 80, weight: 0}").replace(
                "{name: app-b, port: 80, weight: 0}", "{name: app-b, port: 80, weight: 100}")
            workloads.write_text(text)
            watch = subprocess.Popen(["nsenter", f"--net={ext}", "--", sys.executable, "-c", WATCH, w1, str(gateway),
                                      "app-b" if to_b else "app-a"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
            assert watch.stdout is not None and watch.stdin is not None
            watch.stdout.readline()
            started = time.perf_counter()
            watch.stdin.write("go\n")
            watch.stdin.flush()
            lab.apply(str(topo), name=name, progress=Progress(quiet=True))
            applied.append((time.perf_counter() - started) * 1000)
            served.append(float(watch.stdout.readline()) * 1000)
            watch.wait()
        apply = {"canary 100/0 <-> 0/100": {"apply returns": round(statistics.median(applied), 1),
                                            "proxy serves it": round(statistics.median(served), 1), "runs": applies}}
        return {"http": rows, "apply": apply}
    finally:
        lab.down(name)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    for table in bench_ingress().values():
        for row, values in table.items():
            print(f"{row:40} " + "  ".join(f"{k} {v}" for k, v in values.items()))
