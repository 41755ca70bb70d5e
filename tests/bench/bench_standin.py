"""What a stand-in costs: memory per stand-in process, and `up` of a lab of 50 stand-in pods against the same
lab of 50 `sleep` pods, in the same run (goal: within 1.5x), under each runtime.

The stand-in pods are the canonical example as written (nginx, no command, containerPort 80), so `up` also
waits for each to serve; the sleep pods declare no port. Memory is read from /proc/PID/smaps_rollup: RSS, and
PSS (the process's share of pages it shares, such as the interpreter's code), beside a `sleep` process.
"""

from __future__ import annotations

import os
import tempfile
import time

from labkit import lab, paths, processes
from labkit.progress import Progress

TOPOLOGY = """name: {name}
cluster: {{stand-ins: true}}
topology:
  nodes:
    cp: {{kind: k8s-node}}
    w1: {{kind: k8s-node}}
workloads:
  - apiVersion: apps/v1
    kind: Deployment
    metadata: {{name: load}}
    spec:
      replicas: {pods}
      selector: {{matchLabels: {{app: load}}}}
      template:
        metadata: {{labels: {{app: load}}}}
        spec:
          containers: [{container}]
"""
STAND_IN = "{name: nginx, image: 'nginx:1.14.2', ports: [{containerPort: 80}]}"
SLEEP = "{name: sleep, image: labkit/node, command: [sleep, infinity]}"


def memory(pid: int) -> dict[str, int] | None:
    """RSS and PSS of a process, in kB."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
            fields = {line.split(":")[0]: int(line.split()[1]) for line in fh if line.startswith(("Rss:", "Pss:"))}
    except OSError:
        return None
    return {"rss_kb": fields["Rss"], "pss_kb": fields["Pss"]}


def stand_in_pids(name: str) -> list[int]:
    files = paths.lab(name)
    found = []
    for path in processes.pid_files(os.path.join(files.dir, "pods")):
        proc = processes.recorded(path, marker=files.dir)
        if proc is not None:
            found.append(proc.pid)
    return found


def sleep_pids(summary: dict) -> list[int]:
    from labkit.net.netns import pids_in_namespaces

    pids = pids_in_namespaces([p["netns_path"] for p in summary["pods"] if p["namespace"] == "default"])
    return [p for p in pids if processes.cmdline(p) == ["sleep", "infinity"]]  # the containers' (and pod holders')


def _mean(values: list[int]) -> float:
    return sum(values) / len(values) if values else 0.0


def _up(path: str, runtime: str, name: str, pids) -> tuple[float, dict, list[dict]]:
    started = time.perf_counter()
    try:
        summary = lab.up(path, runtime=runtime, progress=Progress(quiet=True), name=name)
        seconds = time.perf_counter() - started
        used = [m for pid in pids(name, summary) if (m := memory(pid)) is not None]
        return seconds, summary["timings"], used
    finally:
        lab.down(name)


def bench_standin(pods: int = 50, runtimes: tuple[str, ...] = ("netns", "docker"), repeat: int = 2) -> list[dict]:
    """Per runtime: best `up` of each lab out of `repeat` (alternating), and memory per process."""
    name = f"bsi{os.getpid() % 10000}"
    files = {}
    for kind, container in (("stand-in", STAND_IN), ("sleep", SLEEP)):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
            fh.write(TOPOLOGY.format(name=name, pods=pods, container=container))
        files[kind] = fh.name
    pid_finders = {"stand-in": lambda lab_name, summary: stand_in_pids(lab_name),
                   "sleep": lambda lab_name, summary: sleep_pids(summary)}
    rows = []
    try:
        for runtime in runtimes:
            best: dict[str, tuple[float, dict, list[dict]]] = {}
            for _ in range(repeat):
                for kind, path in files.items():
                    result = _up(path, runtime, name, pid_finders[kind])
                    if kind not in best or result[0] < best[kind][0]:
                        best[kind] = result
            for kind, (seconds, timings, used) in best.items():
                rows.append({"runtime": runtime, "pods": kind, "up_s": seconds,
                             "pods_phase_s": timings.get("pods", 0.0), "readiness_s": timings.get("readiness", 0.0),
                             "processes": len(used), "rss_kb": _mean([m["rss_kb"] for m in used]),
                             "pss_kb": _mean([m["pss_kb"] for m in used])})
            stand_in, sleep = (next(r for r in rows if r["runtime"] == runtime and r["pods"] == k)
                               for k in ("stand-in", "sleep"))
            stand_in["ratio"] = stand_in["up_s"] / sleep["up_s"]
    finally:
        for path in files.values():
            os.unlink(path)
    return rows


def print_standin_bench(pods: int = 50) -> list[dict]:
    from rich.console import Console
    from rich.table import Table

    rows = bench_standin(pods)
    table = Table(title=f"stand-in pods against sleep pods ({pods} each, same run; goal: up within 1.5x)")
    for column in ("runtime", "pods", "up", "pods phase", "readiness", "x sleep", "processes measured",
                   "RSS each", "PSS each"):
        table.add_column(column, justify="left" if column in ("runtime", "pods") else "right")
    for r in rows:
        table.add_row(r["runtime"], r["pods"], f"{r['up_s'] * 1000:.0f} ms", f"{r['pods_phase_s'] * 1000:.0f} ms",
                      f"{r['readiness_s'] * 1000:.0f} ms", f"{r['ratio']:.2f}" if "ratio" in r else "",
                      str(r["processes"]), f"{r['rss_kb'] / 1024:.1f} MiB", f"{r['pss_kb'] / 1024:.1f} MiB")
    Console(width=max(Console().width, 132)).print(table)  # piped output too: the table is wide
    return rows
