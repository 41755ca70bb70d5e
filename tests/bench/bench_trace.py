"""`labkit trace` end to end for a cross-node Service request on kube-3node (goal: under 1 s):
`default/client` (on cp) to the Service `web`, repeated until the chosen endpoint was on another
node `runs` times; as the library call and as the `labkit trace` command (with its interpreter's
start). The baseline, measured in the same run: the same request sent by the agent without tracing."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from labkit import lab
from labkit.progress import Progress
from labkit.trace import run as trace_run

ROOT = Path(__file__).resolve().parents[2]


def bench_trace(runs: int = 5) -> dict:
    name = f"btr{os.getpid() % 10000}"
    lab.up(str(ROOT / "topologies" / "kube-3node.yaml"), progress=Progress(quiet=True), name=name)
    try:
        status = lab.status(name)[0]
        client = next(p for p in status["pods"] if p["name"] == "client")
        cross, local, hops = [], [], []
        for _ in range(runs * 6):
            started = time.perf_counter()
            report = lab.trace(name, "default/client", "web")
            elapsed = (time.perf_counter() - started) * 1000
            pod = report["endpoint"].split(" ")[0]
            node = next(p["node"] for p in status["pods"] if f"{p['namespace']}/{p['name']}" == pod)
            (cross if node != client["node"] else local).append(elapsed)
            hops.append(len(report["probe"]) + len(report["reply"]))
            if len(cross) >= runs:
                break
        command = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "labkit.cli", "trace", name, "default/client", "web"],
                           check=True, capture_output=True)
            command.append((time.perf_counter() - started) * 1000)
        service = next(s for s in status["services"] if s["name"] == "web")
        plain = []
        for _ in range(runs):
            started = time.perf_counter()
            trace_run.run_probe(client["netns_path"], {"id": 1, "op": "connect", "protocol": "tcp",
                                                       "host": service["cluster_ip"], "port": 80, "timeout": 1})
            plain.append((time.perf_counter() - started) * 1000)
    finally:
        lab.down(name)

    def row(values: list[float]) -> dict:
        return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)} \
            if values else {"median": float("nan"), "min": float("nan"), "max": float("nan"), "runs": 0}

    return {"trace, cross-node endpoint": row(cross), "trace, same-node endpoint": row(local),
            "labkit trace (command)": row(command), "the probe alone (agent, no tracing)": row(plain),
            "hops per trace (probe + reply)": f"{statistics.median(hops):g}", "goal": "under 1000 ms"}
