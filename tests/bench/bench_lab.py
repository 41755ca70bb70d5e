"""`up`/`down` of generated chains beside the shell floor measured in the same run.

The floor is what a shell script pays with iproute2 alone: one `ip -batch` that
adds the N namespaces and N-1 veth pairs, then one `ip -n NS -batch` per
namespace for its addresses and link-ups (and one `ip -batch` of `netns del`
for down). Ratios, not seconds, are the result: absolute times here are noise.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import tempfile
import time

from rich.console import Console
from rich.table import Table

from labkit import lab
from labkit.progress import Progress


def _subnet(i: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network((int(ipaddress.IPv4Address("10.128.0.0")) + 4 * i, 30))


def chain_topology(n: int, name: str) -> str:
    lines = [f"name: {name}", "topology:", "  nodes:"]
    lines += [f"    n{i}: {{kind: linux}}" for i in range(n)]
    lines.append("  links:")
    for i in range(n - 1):
        net = _subnet(i)
        lines.append(f"    - endpoints: [\"n{i}:eth1\", \"n{i + 1}:eth2\"]")
        lines.append(f"      ipv4: [{net[1]}/30, {net[2]}/30]")
    return "\n".join(lines) + "\n"


def floor_up(n: int, prefix: str) -> float:
    started = time.perf_counter()
    batch = [f"netns add {prefix}{i}" for i in range(n)]
    batch += [f"link add eth1 netns {prefix}{i} type veth peer name eth2 netns {prefix}{i + 1}" for i in range(n - 1)]
    subprocess.run(["ip", "-batch", "-"], input="\n".join(batch) + "\n", text=True, check=True)
    for i in range(n):
        cmds = ["link set lo up"]
        if i < n - 1:
            cmds += [f"address add {_subnet(i)[1]}/30 dev eth1", "link set eth1 up"]
        if i > 0:
            cmds += [f"address add {_subnet(i - 1)[2]}/30 dev eth2", "link set eth2 up"]
        subprocess.run(["ip", "-n", f"{prefix}{i}", "-batch", "-"], input="\n".join(cmds) + "\n", text=True,
                       check=True)
    return time.perf_counter() - started


def floor_down(n: int, prefix: str) -> float:
    started = time.perf_counter()
    subprocess.run(["ip", "-batch", "-"], input="\n".join(f"netns del {prefix}{i}" for i in range(n)) + "\n",
                   text=True, check=True)
    return time.perf_counter() - started


def labkit_up_down(n: int, name: str) -> tuple[float, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        fh.write(chain_topology(n, name))
    try:
        started = time.perf_counter()
        lab.up(fh.name, progress=Progress(quiet=True))
        up_time = time.perf_counter() - started
        started = time.perf_counter()
        lab.down(name)
        return up_time, time.perf_counter() - started
    finally:
        lab.down(name)
        os.unlink(fh.name)


def bench_lab(sizes: list[int], repeat: int = 3) -> list[dict]:
    """Best of `repeat` runs for each size, labkit and floor interleaved so both see the same machine."""
    rows = []
    tag = f"{os.getpid() % 10000}"
    for n in sizes:
        best = {"labkit_up": float("inf"), "labkit_down": float("inf"),
                "floor_up": float("inf"), "floor_down": float("inf")}
        for _ in range(repeat):
            prefix = f"lkbench{tag}-"
            best["floor_up"] = min(best["floor_up"], floor_up(n, prefix))
            best["floor_down"] = min(best["floor_down"], floor_down(n, prefix))
            lk_up, lk_down = labkit_up_down(n, f"bench{tag}")
            best["labkit_up"] = min(best["labkit_up"], lk_up)
            best["labkit_down"] = min(best["labkit_down"], lk_down)
        rows.append({"n": n, **best})
    return rows


def print_lab_bench(sizes: list[int], repeat: int = 3) -> list[dict]:
    rows = bench_lab(sizes, repeat)
    table = Table(title="lab up/down: labkit vs the ip -batch floor (best of %d)" % repeat)
    for column in ("N nodes", "labkit up", "floor up", "up ratio", "labkit down", "floor down", "down ratio"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(str(r["n"]), f"{r['labkit_up'] * 1000:.0f} ms", f"{r['floor_up'] * 1000:.0f} ms",
                      f"{r['labkit_up'] / r['floor_up']:.2f}x", f"{r['labkit_down'] * 1000:.0f} ms",
                      f"{r['floor_down'] * 1000:.0f} ms", f"{r['labkit_down'] / r['floor_down']:.2f}x")
    console = Console()
    console.print(table)
    by_n = {r["n"]: r for r in rows}
    if 100 in by_n and 1000 in by_n:
        lk = by_n[1000]["labkit_up"] / by_n[100]["labkit_up"]
        fl = by_n[1000]["floor_up"] / by_n[100]["floor_up"]
        console.print(f"growth of up from N=100 to N=1000: labkit {lk:.1f}x, floor {fl:.1f}x")
    return rows
