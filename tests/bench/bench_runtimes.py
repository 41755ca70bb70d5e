"""`up` and `down` of the same labs under each runtime, in the same run, with where `up`'s time goes."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from labkit import lab
from labkit.progress import Progress
from tests.bench.bench_lab import chain_topology

ROOT = Path(__file__).resolve().parents[2]


def _up_down(path: str, runtime: str, name: str) -> dict:
    started = time.perf_counter()
    try:
        summary = lab.up(path, runtime=runtime, progress=Progress(quiet=True), name=name)
        up = time.perf_counter() - started
        started = time.perf_counter()
        lab.down(name)
        return {"up": up, "down": time.perf_counter() - started, "phases": summary["timings"]}
    finally:
        lab.down(name)


def bench_runtimes(chain: int = 50) -> list[dict]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        fh.write(chain_topology(chain, "chain"))
    labs = {"kube-3node": str(ROOT / "topologies" / "kube-3node.yaml"), f"chain-{chain}": fh.name}
    rows = []
    try:
        for label, path in labs.items():
            for runtime in ("netns", "docker"):
                result = _up_down(path, runtime, f"brt{os.getpid() % 10000}")
                rows.append({"lab": label, "runtime": runtime, **result})
    finally:
        os.unlink(fh.name)
    return rows


def print_runtime_bench(chain: int = 50) -> list[dict]:
    from rich.console import Console
    from rich.table import Table

    rows = bench_runtimes(chain)
    table = Table(title="up/down under each runtime (same run)")
    for column in ("lab", "runtime", "up", "down", "where up's time goes (largest phases)"):
        table.add_column(column, justify="left" if column in ("lab", "runtime") else "right")
    for r in rows:
        phases = sorted(r["phases"].items(), key=lambda kv: -kv[1])[:3]
        table.add_row(r["lab"], r["runtime"], f"{r['up'] * 1000:.0f} ms", f"{r['down'] * 1000:.0f} ms",
                      ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in phases))
    Console().print(table)
    return rows
