"""Benchmark: L2 failover of a LoadBalancer address (MetalLB's L2 mode), speaker stopped to traffic via the new node.

`labkit.lab.up` builds kube-lb.yaml under a unique name. A probe runs inside the outside client `ext` (on
the node network) and connects to web-l2's address every PROBE seconds; the echo pod answers with the
client address it sees, which (Cluster policy: masqueraded by the node the packet came in at) names the
node the client's ARP entry points at. Then, ROUNDS times:

- failover: the announcing node's speaker is killed (SIGKILL: a crash, nothing said on the way out);
  measured from the kill until the first answer that came in through another node. The next speaker
  sees the pid gone within its poll (50 ms), claims the address and sends gratuitous ARP; the
  client's entry moves at once, no ARP request needed;
- failback: the speaker is started again (labkit.lb.announce.start_speakers, the way `apply` does);
  measured from the start until the first answer through it again (it wins the election back).

Before each step the bench waits out the client's neighbour locktime (1 s by default) since the last
takeover: Linux ignores a new address for an entry updated less than that ago, so back-to-back flips
would measure the second GARP of the burst (1.1 s later), not the takeover. The clocks are
CLOCK_MONOTONIC on both sides (one kernel). The lab is taken down afterwards and nothing
of it is left.

    python -m tests.bench.bench_lb [ROUNDS]   # as root; prints the result as JSON
"""

from __future__ import annotations

import ipaddress
import json
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = ROOT / "topologies" / "kube-lb.yaml"
SERVICE, CLIENT = "default/web-l2", "ext"
PROBE = 0.002  # seconds between the probe's connection attempts
TIMEOUT = 30.0

# Inside the client's namespace: connect until an answer comes in through a node other than argv[3]'s
# addresses (failover) or through them (failback); print the CLOCK_MONOTONIC time of that answer.
_PROBE = r"""
import socket, sys, time
ip, port, want, addrs, gap = sys.argv[1], int(sys.argv[2]), sys.argv[3], set(sys.argv[4].split(",")), float(sys.argv[5])
print("ready", flush=True)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        with socket.create_connection((ip, port), timeout=0.2) as s:
            words = s.recv(256).split()
        seen = words[1].decode() if len(words) > 1 else ""
        if (seen in addrs) == (want == "via"):
            print(time.monotonic(), seen, flush=True)
            sys.exit(0)
    except OSError:
        pass
    time.sleep(gap)
sys.exit(1)
"""


def _stats(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {"median_ms": round(statistics.median(ms), 1), "min_ms": round(min(ms), 1), "max_ms": round(max(ms), 1)}


def _node_addresses(status: dict, node: str) -> list[str]:
    """The addresses a node masquerades with: its node IP, and its pod gateway (the podCIDR's .1)."""
    entry = next(n for n in status["nodes"] if n["name"] == node)
    found = [str(entry["mgmt_ipv4"]).split("/")[0]]
    if entry.get("pod_cidr"):
        found.append(str(next(ipaddress.IPv4Network(entry["pod_cidr"]).hosts())))
    return found


def _locktime(netns_path: str) -> float:
    """The client's neighbour locktime on eth0, in seconds (the sysctl counts USER_HZ ticks: 100 a second)."""
    out = subprocess.run(["nsenter", f"--net={netns_path}", "--", "sysctl", "-n", "net.ipv4.neigh.eth0.locktime"],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip()) / 100


def _probe(netns_path: str, ip: str, want: str, addrs: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen(["nsenter", f"--net={netns_path}", "--", sys.executable, "-IS", "-c", _PROBE, ip, "80",
                             want, ",".join(addrs), str(PROBE)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _answered(proc: subprocess.Popen, t0: float) -> float:
    out, _ = proc.communicate(timeout=TIMEOUT)
    if proc.returncode != 0:
        raise RuntimeError("the probe saw no answer through the expected node")
    return float(out.split()[0]) - t0


def bench_lb(rounds: int = 5) -> dict:
    from labkit import lab, processes
    from labkit.lb import announce
    from labkit.progress import Progress

    name = f"lbb-{uuid.uuid4().hex[:6]}"
    started = time.perf_counter()
    lab.up(str(TOPOLOGY), progress=Progress(quiet=True), name=name)
    up_s = time.perf_counter() - started
    try:
        status = lab.status(name)[0]
        nodes = {n["name"]: n for n in status["nodes"]}
        svc = next(s for s in status["services"] if f"{s['namespace']}/{s['name']}" == SERVICE)
        ip, first = svc["load_balancer"]["ip"], svc["load_balancer"]["announcing_node"]
        client = nodes[CLIENT]["netns_path"]
        results: dict[str, list[float]] = {"failover: speaker killed -> traffic via the next node": [],
                                           "failback: speaker started -> traffic via it again": []}
        settle = _locktime(client) + 0.1
        for _ in range(rounds):
            speaker = announce.running(name, first)
            assert speaker is not None
            time.sleep(settle)  # not readiness: the client's entry must be older than its locktime
            probe = _probe(client, ip, "not-via", _node_addresses(status, first))
            t0 = time.monotonic()
            processes.signal_process(speaker, signal.SIGKILL)
            results["failover: speaker killed -> traffic via the next node"].append(_answered(probe, t0))
            processes.stop([speaker])
            time.sleep(settle)
            probe = _probe(client, ip, "via", _node_addresses(status, first))
            t0 = time.monotonic()
            announce.start_speakers(name, {first: nodes[first]["netns_path"]})
            results["failback: speaker started -> traffic via it again"].append(_answered(probe, t0))
        rows = {k: {**_stats(v), "rounds": len(v)} for k, v in results.items() if v}
        return {"rows": rows, "lab_up_s": round(up_s, 2), "service": SERVICE, "ip": ip, "node": first,
                "speaker_poll_ms": 50, "probe_gap_ms": PROBE * 1000, "locktime_s": settle - 0.1}
    finally:
        lab.down(name)
        left = lab.leftovers(name)
        if left:
            raise RuntimeError(f"bench lab {name} left things behind: {left}")


def print_lb_bench(rounds: int = 5) -> dict:
    result = bench_lb(rounds)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"L2 failover of {result['service']} ({result['ip']}, announced by {result['node']}), "
                        "as the outside client's connections see it (ms)")
    table.add_column("")
    for column in ("median_ms", "min_ms", "max_ms", "rounds"):
        table.add_column(column, justify="right")
    for label, row in result["rows"].items():
        table.add_row(label, *(str(row[c]) for c in ("median_ms", "min_ms", "max_ms", "rounds")))
    console = Console(width=132)
    console.print(table)
    console.print(f"speakers poll each other every {result['speaker_poll_ms']} ms; the probe connects every "
                  f"{result['probe_gap_ms']:.0f} ms; client neighbour locktime {result['locktime_s']} s (waited out "
                  f"before each step); lab up {result['lab_up_s']} s", highlight=False)
    return result


if __name__ == "__main__":
    print(json.dumps(bench_lb(int(sys.argv[1]) if len(sys.argv) > 1 else 5), indent=2))
