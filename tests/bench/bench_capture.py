"""What a running `labkit capture` costs a pod's throughput: iperf3 (TCP) from a pod to a pod on another node of
kube-3node, with no capture, with one on the receiving pod (every interface, pcap to a file), and with one on
the receiving pod's node (every interface: the pod's veth, the node link, so each packet twice), under each
runtime. The best of `repeat` runs of `seconds` each is kept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from labkit import lab
from labkit.progress import Progress

ROOT = Path(__file__).resolve().parents[2]
PORT = 5201


def _nsenter(path: str, *argv: str) -> list[str]:
    return ["nsenter", f"--net={path}", *argv]


def _listening(path: str, deadline: float = 10) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        out = subprocess.run(_nsenter(path, "ss", "-Hltn"), capture_output=True, text=True, check=False).stdout
        if f":{PORT} " in out:
            return
        time.sleep(0.02)
    raise RuntimeError("iperf3 server did not listen")


def _iperf3(server: str, client: str, address: str, seconds: int) -> float:
    srv = subprocess.Popen(_nsenter(server, "iperf3", "-s", "-1", "-p", str(PORT)), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        _listening(server)
        out = subprocess.run(_nsenter(client, "iperf3", "-c", address, "-p", str(PORT), "-t", str(seconds), "-J"),
                             capture_output=True, text=True, timeout=seconds + 30, check=True)
        return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        srv.wait(timeout=30)


def _with_capture(name: str, target: str, pcap: str, run):
    proc = subprocess.Popen([sys.executable, "-m", "labkit.cli", "capture", name, target, "-w", pcap], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = b""
    while b"listening on" not in seen:  # tcpdump says so once it captures
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:
            raise RuntimeError(f"capture did not start: {seen.decode()}")
        seen += chunk
    try:
        return run()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def bench_capture(seconds: int = 3, repeat: int = 2, runtimes: tuple[str, ...] = ("netns", "docker")) -> dict:
    rows: dict = {}
    for runtime in runtimes:
        name = f"bcap{os.getpid() % 10000}"
        try:
            summary = lab.up(str(ROOT / "topologies" / "kube-3node.yaml"), runtime=runtime,
                             progress=Progress(quiet=True), name=name)
            pods = [p for p in summary["pods"] if p["namespace"] == "default" and p.get("ip")]
            client = next(p for p in pods if p["name"] == "client")
            server = next(p for p in pods if p["node"] != client["node"])
            node = next(n for n in summary["nodes"] if n["name"] == server["node"])
            target = f"{server['namespace']}/{server['name']}"

            def measure(server_pod=server, client_pod=client) -> float:
                return max(_iperf3(server_pod["netns_path"], client_pod["netns_path"], server_pod["ip"], seconds)
                           for _ in range(repeat))

            with tempfile.TemporaryDirectory() as folder:
                none = measure()
                on_pod = _with_capture(name, target, os.path.join(folder, "pod.pcap"), measure)
                on_node = _with_capture(name, node["name"], os.path.join(folder, "node.pcap"), measure)
            rows[runtime] = {"no capture Gbit/s": none, "capture on pod Gbit/s": on_pod,
                             "pod: cost %": 100 * (1 - on_pod / none),
                             "capture on node Gbit/s": on_node, "node: cost %": 100 * (1 - on_node / none)}
        finally:
            lab.down(name)
    rows["note"] = (f"iperf3 TCP pod to pod across nodes of kube-3node, best of {repeat} x {seconds} s; "
                    "capture: labkit capture, every interface, pcap to a file")
    return rows
