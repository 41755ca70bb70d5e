"""`up` of kube-3node in every CNI backend x pod attachment mode, in one table; and single-stack vs dual-stack.

Rows come from the registries (labkit.cni.backends.REGISTRY, labkit.topology.kinds.CNI_MODES), so a
backend registered later gets its row with no change here: each cell is topologies/kube-3node.yaml
with `cluster.cni` set to that backend and mode. Best of `repeat`, cells interleaved so every one
sees the same machine; the `pod network` phase (conflists, routes, the backend's devices or daemons)
and the `pods` phase (sandboxes and CNI ADDs) are shown apart from the whole.

Single- vs dual-stack: kube-3node as shipped (IPv4) and the same file with `pod-cidr` and `service-cidr`
given a v4,v6 pair (every pod two addresses, routes, masquerade and Service rules per family), interleaved
in the same run; issue 17's goal is that dual-stack adds at most 25% to `up`.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import yaml

from labkit import lab
from labkit.cni.backends import REGISTRY
from labkit.progress import Progress
from labkit.topology.kinds import CNI_MODES

ROOT = Path(__file__).resolve().parents[2]
KUBE_3NODE = ROOT / "topologies" / "kube-3node.yaml"


def variant(backend: str, mode: str, folder: str) -> str:
    doc = yaml.safe_load(KUBE_3NODE.read_text())
    doc["cluster"]["cni"] = {**doc["cluster"].get("cni", {}), "backend": backend, "mode": mode}
    doc["workloads"] = [str(KUBE_3NODE.parent / w) if isinstance(w, str) else w for w in doc.get("workloads", [])]
    path = os.path.join(folder, f"kube-{backend}-{mode}.yaml")
    Path(path).write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


DUAL_STACK = {"pod-cidr": "10.244.0.0/16,fd00:10:244::/56", "service-cidr": "10.96.0.0/16,fd00:10:96::/112"}
DUAL_STACK_GOAL = 1.25  # dual-stack `up` at most 25% slower than single-stack


def dual_stack_variant(folder: str) -> str:
    """kube-3node.yaml with a v4,v6 pair for the pod and service CIDRs (IPv4 preferred, as before)."""
    doc = yaml.safe_load(KUBE_3NODE.read_text())
    doc["cluster"].update(DUAL_STACK)
    doc["workloads"] = [str(KUBE_3NODE.parent / w) if isinstance(w, str) else w for w in doc.get("workloads", [])]
    path = os.path.join(folder, "kube-3node-dualstack.yaml")
    Path(path).write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _timed_up(path: str, name: str, runtime: str | None) -> dict:
    try:
        started = time.perf_counter()
        summary = lab.up(path, runtime=runtime, progress=Progress(quiet=True), name=name)
        total = time.perf_counter() - started
    finally:
        lab.down(name)
    timings = summary.get("timings", {})
    return {"up": total, "pod network": timings.get("pod network", 0.0), "pods": timings.get("pods", 0.0)}


def bench_dual_stack(repeat: int = 3, runtime: str | None = None) -> list[dict]:
    """kube-3node's `up`, single-stack and dual-stack, best of `repeat` each, runs interleaved; each row has
    `ratio`: its `up` over the single-stack one."""
    name = f"bds{os.getpid() % 100000}"
    best: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="lkt-bench-up-") as folder:
        files = {"single-stack": str(KUBE_3NODE), "dual-stack": dual_stack_variant(folder)}
        for _ in range(repeat):
            for stack, path in files.items():
                row = _timed_up(path, name, runtime)
                if stack not in best or row["up"] < best[stack]["up"]:
                    best[stack] = row
    single = best["single-stack"]["up"]
    return [{"stack": stack, **row, "ratio": row["up"] / single} for stack, row in best.items()]


def bench_up(repeat: int = 3, runtime: str | None = None) -> list[dict]:
    cells = [(backend, mode) for backend in REGISTRY.names() for mode in CNI_MODES]
    best: dict[tuple[str, str], dict] = {}
    name = f"bup{os.getpid() % 100000}"
    with tempfile.TemporaryDirectory(prefix="lkt-bench-up-") as folder:
        files = {cell: variant(*cell, folder) for cell in cells}
        for _ in range(repeat):
            for cell in cells:
                row = _timed_up(files[cell], name, runtime)
                if cell not in best or row["up"] < best[cell]["up"]:
                    best[cell] = row
    return [{"backend": b, "mode": m, **best[(b, m)]} for b, m in cells]


def print_up_bench(repeat: int = 3) -> list[dict]:
    from rich.console import Console
    from rich.table import Table

    rows = bench_up(repeat)
    table = Table(title=f"kube-3node up per CNI backend and mode (netns runtime, best of {repeat})")
    for column in ("backend", "mode", "up", "pod network phase", "pods phase"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(r["backend"], r["mode"], f"{r['up'] * 1000:.0f} ms", f"{r['pod network'] * 1000:.0f} ms",
                      f"{r['pods'] * 1000:.0f} ms")
    Console().print(table)
    stacks = bench_dual_stack(repeat)
    table = Table(title=f"kube-3node up, single-stack vs dual-stack (netns runtime, best of {repeat}; "
                        f"goal: dual-stack <= {DUAL_STACK_GOAL:.2f}x)")
    for column in ("stack", "up", "pod network phase", "pods phase", "ratio"):
        table.add_column(column, justify="right")
    for r in stacks:
        table.add_row(r["stack"], f"{r['up'] * 1000:.0f} ms", f"{r['pod network'] * 1000:.0f} ms",
                      f"{r['pods'] * 1000:.0f} ms", f"{r['ratio']:.2f}x")
    Console().print(table)
    return rows + stacks


if __name__ == "__main__":
    print_up_bench()
