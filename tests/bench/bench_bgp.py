"""Benchmark: BGP convergence in a lab of backend bgp (Calico's model), with the timers that bound it.

`labkit.lab.up` builds kube-bgp.yaml under a unique name (3 k8s-nodes in an iBGP mesh, each also
peering with a ToR router). Then, ROUNDS times, on node w2:

- withdraw (stop): from the TERM sent to w2's BIRD until neither cp, w1 nor the ToR holds a route
  to w2's podCIDR (BIRD says goodbye with a Cease NOTIFICATION, the peers withdraw at once);
- withdraw (crash): the same after a KILL (no NOTIFICATION: the kernel closes the TCP sessions);
- announce (start): from starting w2's BIRD (`labkit.bgp.start`: the daemon forks, reads its
  config, opens its socket) until cp, w1 and the ToR all hold the route again.

Each observer node's kernel table is polled over an open netlink socket every POLL seconds. The
lab is taken down afterwards and nothing of it is left.

    python -m tests.bench.bench_bgp [ROUNDS]   # as root; prints the result as JSON
"""

from __future__ import annotations

import json
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = ROOT / "topologies" / "kube-bgp.yaml"
NODE, OBSERVERS = "w2", ("cp", "w1", "tor")
POLL = 0.001
TIMEOUT = 60.0


def _holds(socks: dict, prefix: str) -> dict[str, bool]:
    net, plen = prefix.split("/")
    return {name: any(r["dst"] == net and r["prefixlen"] == int(plen) for r in sock.routes())
            for name, sock in socks.items()}


def _until(socks: dict, prefix: str, present: bool, started: float) -> float:
    """Seconds from `started` until every observer holds (present) or lacks the route."""
    while True:
        if all(v == present for v in _holds(socks, prefix).values()):
            return time.perf_counter() - started
        if time.perf_counter() - started > TIMEOUT:
            raise RuntimeError(f"{prefix} still {'missing' if present else 'present'} after {TIMEOUT} s")
        time.sleep(POLL)


def _stats(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {"median_ms": round(statistics.median(ms), 1), "min_ms": round(min(ms), 1), "max_ms": round(max(ms), 1)}


def bench_bgp(rounds: int = 5) -> dict:
    from labkit import bgp, lab, processes
    from labkit.net.netlink import Netlink
    from labkit.progress import Progress

    name = f"bgpb-{uuid.uuid4().hex[:6]}"
    started = time.perf_counter()
    lab.up(str(TOPOLOGY), progress=Progress(quiet=True), name=name)
    up_s = time.perf_counter() - started
    socks = {}
    try:
        status = lab.status(name)[0]
        nodes = {n["name"]: n for n in status["nodes"]}
        prefix = nodes[NODE]["pod_cidr"]
        socks = {o: Netlink.in_netns(nodes[o]["netns_path"]) for o in OBSERVERS}
        files = bgp.files_of(name, NODE)
        netns_path = nodes[NODE]["netns_path"]
        results: dict[str, list[float]] = {"withdraw after stop (TERM)": [], "withdraw after crash (KILL)": [],
                                           "announce after start": []}
        for i in range(rounds):
            crash = i % 2 == 1
            daemon = bgp.running(files)
            assert daemon is not None
            t0 = time.perf_counter()
            if crash:
                processes.signal_process(daemon, signal.SIGKILL)
            else:
                processes.signal_process(daemon, signal.SIGTERM)
            key = "withdraw after crash (KILL)" if crash else "withdraw after stop (TERM)"
            results[key].append(_until(socks, prefix, False, t0))
            processes.stop([daemon])  # gone (and its files, after a TERM) before it starts again
            t0 = time.perf_counter()
            bgp.start(files, netns_path)
            results["announce after start"].append(_until(socks, prefix, True, t0))
        rows = {k: {**_stats(v), "rounds": len(v)} for k, v in results.items() if v}
        return {"rows": rows, "timers": bgp.TIMERS.as_status(), "lab_up_s": round(up_s, 2),
                "observers": list(OBSERVERS), "node": NODE}
    finally:
        for sock in socks.values():
            sock.close()
        lab.down(name)
        left = lab.leftovers(name)
        if left:
            raise RuntimeError(f"bench lab {name} left things behind: {left}")


def print_bgp_bench(rounds: int = 5) -> dict:
    result = bench_bgp(rounds)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"BGP convergence: node {result['node']}'s podCIDR as seen by "
                        f"{', '.join(result['observers'])} (ms)")
    table.add_column("")
    for column in ("median_ms", "min_ms", "max_ms", "rounds"):
        table.add_column(column, justify="right")
    for name, row in result["rows"].items():
        table.add_row(name, *(str(row[c]) for c in ("median_ms", "min_ms", "max_ms", "rounds")))
    console = Console(width=132)
    console.print(table)
    t = result["timers"]
    console.print(f"timers: hold {t['hold']} s, keepalive {t['keepalive']} s, connect delay {t['connect_delay']} s, "
                  f"connect retry {t['connect_retry']} s, error wait {t['error_wait'][0]}-{t['error_wait'][1]} s, "
                  f"graceful restart off; lab up {result['lab_up_s']} s", highlight=False)
    return result


if __name__ == "__main__":
    print(json.dumps(bench_bgp(int(sys.argv[1]) if len(sys.argv) > 1 else 5), indent=2))
