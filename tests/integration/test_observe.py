"""Seeing and bending a running lab: link impairment (declared and `labkit netem`), `labkit capture`
and `labkit events`, under both runtimes. What is measured is what the kernel does: iperf3 and ping
through the impaired links, pcap files read back with tshark, netlink notifications."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labkit import lab, paths
from labkit.errors import LabkitError
from labkit.progress import Progress
from labkit.pytest_plugin import labkit_fixture

from .conftest import ROOT, RUNTIMES, labkit

HERE = Path(__file__).resolve().parent
impaired = labkit_fixture(HERE / "impaired.yaml", runtime=RUNTIMES, scope="module")


def in_netns(running, target: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """The host's own tools in a node's namespace (the same for both runtimes)."""
    return subprocess.run(["nsenter", f"--net={running.netns_path(target)}", *argv], capture_output=True,
                          text=True, timeout=timeout, check=False)


def ping_loss(running, source: str, address: str, count: int, interval: str = "0.01") -> float:
    result = in_netns(running, source, "ping", "-n", "-q", "-c", str(count), "-i", interval, "-W", "1", address)
    match = re.search(r"([\d.]+)% packet loss", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


def wait_listening(running, target: str, port: int, deadline: float = 10) -> None:
    """Until something listens on TCP `port` in the target's namespace (ss, asked again until then)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if f":{port} " in in_netns(running, target, "ss", "-Hltn").stdout:
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {target}:{port}")


def iperf3_mbit(running, server: str, client: str, address: str, seconds: int = 2) -> float:
    """Throughput from `client` to `server` (iperf3, TCP), in Mbit/s as the receiver counted it."""
    port = 5201
    srv = subprocess.Popen(["nsenter", f"--net={running.netns_path(server)}", "iperf3", "-s", "-1", "-p",
                            str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(running, server, port)
        out = in_netns(running, client, "iperf3", "-c", address, "-p", str(port), "-t", str(seconds), "-J")
        assert out.returncode == 0, out.stdout + out.stderr
        return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6
    finally:
        srv.wait(timeout=30)


def in_force(name: str) -> dict[tuple[str, str], dict]:
    return {(i["node"], i["interface"]): i for i in lab.status(name)[0]["impairments"]}


# ---------------------------------------------------------------- impairment


def test_declared_impairments_are_in_force_and_in_status(impaired) -> None:
    found = in_force(impaired.name)
    assert found[("h1", "eth1")]["rate"] == 10_000 and found[("h1", "eth1")]["via"] == ["tbf"]
    assert ("h2", "eth1") not in found  # the rate was given on h1's end only
    for end in (("h1", "eth2"), ("h2", "eth2")):
        assert found[end]["loss"] == 100 and found[end]["via"] == ["nftables"]
    shown = labkit("status", "--name", impaired.name).stdout
    assert "rate 10mbit" in shown and "loss 100%" in shown


def test_rate_shapes_iperf3_to_about_the_rate(impaired) -> None:
    shaped = iperf3_mbit(impaired, "h2", "h1", "10.0.0.2")  # h1:eth1 is 10 mbit/s
    free = iperf3_mbit(impaired, "h1", "h2", "10.0.0.1")    # h2:eth1 is not shaped
    assert 5 < shaped < 12, shaped
    assert free > 5 * shaped, (free, shaped)


def test_total_loss_drops_every_packet(impaired) -> None:
    assert ping_loss(impaired, "h1", "10.0.1.2", 5, "0.2") == 100
    assert impaired.exec("h1", "ping", "-c1", "-W1", "10.0.0.2").returncode == 0  # the other link carries


def test_netem_sets_loss_live_and_clears_it(impaired) -> None:
    name = impaired.name
    labkit("netem", name, "h2:eth1", "--loss", "50%")
    assert in_force(name)[("h2", "eth1")]["loss"] == 50
    measured = ping_loss(impaired, "h2", "10.0.0.1", 200, "0.005")  # requests h2 -> h1 lose half
    assert 20 <= measured <= 80, measured
    shown = json.loads(labkit("netem", "show", name, "--format", "json").stdout)
    assert {"node": "h2", "interface": "eth1", "loss": 50.0}.items() <= next(
        i for i in shown if (i["node"], i["interface"]) == ("h2", "eth1")).items()
    labkit("netem", name, "h2:eth1", "--clear")
    assert ("h2", "eth1") not in in_force(name)
    assert ping_loss(impaired, "h2", "10.0.0.1", 20) == 0
    assert in_force(name)[("h1", "eth1")]["rate"] == 10_000  # the other end's impairment is its own


def _kernel_has_netem(running) -> bool:
    """Asked of the kernel itself: can a netem qdisc be added (to lo of h1)?"""
    added = in_netns(running, "h1", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms")
    if added.returncode == 0:
        in_netns(running, "h1", "tc", "qdisc", "del", "dev", "lo", "root")
    return added.returncode == 0


def test_delay_needs_netem_and_says_so(impaired) -> None:
    name = impaired.name
    result = labkit("netem", name, "h1:eth1", "--delay", "50ms", "--rate", "10mbit", check=False)
    if _kernel_has_netem(impaired):  # a kernel with sch_netem: the delay is there, and measurable
        assert result.returncode == 0, result.stderr
        rtt = in_netns(impaired, "h1", "ping", "-c3", "-i0.2", "10.0.0.2").stdout
        assert float(re.search(r"= [\d.]+/([\d.]+)/", rtt).group(1)) >= 45
        labkit("netem", name, "h1:eth1", "--rate", "10mbit")
    else:
        assert result.returncode == 1
        assert "sch_netem" in result.stderr and "delay" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert {k: v for k, v in in_force(name)[("h1", "eth1")].items() if k != "via"} == \
        {"node": "h1", "interface": "eth1", "rate": 10_000}


def test_netem_bad_input_is_one_clear_error(impaired) -> None:
    name = impaired.name
    cases = {("h1:eth1", "--rate", "10kbps"): "kilobytes/s", ("h1:eth9", "--rate", "1mbit"): "no such interface",
             ("h1", "--loss", "1"): "NODE:IFACE", ("h1:eth1", "--loss", "101"): "0 to 100",
             ("nope:eth1", "--loss", "1"): "no node 'nope'"}
    for args, expected in cases.items():
        result = labkit("netem", name, *args, check=False)
        assert result.returncode != 0 and expected in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_declared_delay_without_netem_fails_up_by_name(tmp_path) -> None:
    """A topology asking for delay on a kernel without netem: `up` names the module and leaves nothing."""
    topology = tmp_path / "delay.yaml"
    topology.write_text((HERE / "impaired.yaml").read_text().replace("rate: 10mbit", "delay: 20ms"))
    name = "obsdelay"
    try:
        lab.up(str(topology), progress=Progress(quiet=True), name=name)
    except LabkitError as exc:
        assert "sch_netem" in str(exc) and "h1:eth1" in str(exc) and "phase 'impairments'" in str(exc)
    else:  # a kernel with netem: the delay is in force
        assert in_force(name)[("h1", "eth1")]["delay"] == 20
    finally:
        lab.down(name)
    assert lab.leftovers(name) == []


# ---------------------------------------------------------------- capture


def start_capture(name: str, target: str, *args: str) -> subprocess.Popen:
    """`labkit capture` in the background; returns once tcpdump says it is listening."""
    proc = subprocess.Popen([sys.executable, "-m", "labkit.cli", "capture", name, target, *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = read_until(proc.stderr, b"listening on", 20)
    assert b"listening on" in seen, seen
    return proc


def read_until(stream, marker: bytes, deadline: float) -> bytes:
    seen = b""
    end = time.monotonic() + deadline
    while marker not in seen and time.monotonic() < end:
        ready, _, _ = select.select([stream], [], [], max(0.0, end - time.monotonic()))
        if not ready:
            break
        chunk = os.read(stream.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    return seen


def stop_capture(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> bytes:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return out


def tshark(pcap: bytes | Path, *fields: str, display: str) -> list[list[str]]:
    args = ["tshark", "-r", "-" if isinstance(pcap, bytes) else str(pcap), "-Y", display, "-T", "fields"]
    for f in fields:
        args += ["-e", f]
    result = subprocess.run(args, input=pcap if isinstance(pcap, bytes) else None, capture_output=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return [line.split("\t") for line in result.stdout.decode().splitlines() if line]


def capture_files(name: str) -> list[str]:
    folder = paths.lab_path(name, "capture")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_capture_to_a_file_holds_the_probe(impaired, tmp_path) -> None:
    pcap = tmp_path / "eth1.pcap"
    proc = start_capture(impaired.name, "h2:eth1", "-w", str(pcap), "--", "icmp", "and", "host", "10.0.0.1")
    assert impaired.exec("h1", "ping", "-c2", "-i0.2", "10.0.0.2").returncode == 0
    stop_capture(proc)
    rows = tshark(pcap, "ip.src", "ip.dst", "icmp.type", display="icmp")
    assert ["10.0.0.1", "10.0.0.2", "8"] in rows and ["10.0.0.2", "10.0.0.1", "0"] in rows
    assert capture_files(impaired.name) == []  # the capture's pid and filter files went with it


def test_capture_of_a_pod_streams_dns_to_stdout(kube_lab) -> None:
    """Every interface of a client pod (cooked capture), streamed: the DNS query and its answer."""
    proc = start_capture(kube_lab.name, "default/client", "--", "udp", "port", "53")
    assert kube_lab.resolve("default/client", "web")
    rows = tshark(stop_capture(proc, signal.SIGINT), "dns.qry.name", "dns.flags.response", display="dns")  # Ctrl-C
    assert ["web.default.svc.cluster.local", "0"] in rows and ["web.default.svc.cluster.local", "1"] in rows


def test_capture_refuses_a_bad_filter_and_interface(impaired, tmp_path) -> None:
    never = tmp_path / "never.pcap"
    for args, expected in (((impaired.name, "h1", "-w", str(never), "--", "port", "53", "and", "("),
                            "can't parse filter"),
                           ((impaired.name, "h1:eth7", "-w", "/dev/null"), "no such interface"),
                           ((impaired.name, "h9", "-w", "/dev/null"), "no node 'h9'")):
        result = labkit("capture", *args, check=False)
        assert result.returncode == 1 and expected in result.stderr, result.stderr
    assert not never.exists()  # a capture that never started leaves no empty file
    assert capture_files(impaired.name) == []


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_capture_stops_at_down_and_leaves_nothing(labkit_lab_factory, runtime: str) -> None:
    running = labkit_lab_factory("topologies/two-hosts.yaml", runtime=runtime)
    proc = start_capture(running.name, "h1", "-w", os.devnull)
    lab.down(running.name)
    proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert lab.leftovers(running.name) == []


# ---------------------------------------------------------------- events

EVENTS_LAB = """name: events
cluster: {{}}
topology:
  nodes:
    n1: {{kind: k8s-node}}
workloads:
  - {{apiVersion: v1, kind: Pod, metadata: {{name: client, namespace: default}},
     spec: {{containers: [{{name: c, image: labkit/node, command: [sleep, infinity]}}]}}}}
{extra}"""

EXTRA_POD = """  - {apiVersion: v1, kind: Pod, metadata: {name: extra, namespace: default},
     spec: {containers: [{name: c, image: labkit/node, command: [sleep, infinity]}]}}
"""


class EventStream:
    """`labkit events LAB --format json` in the background, read line by line."""

    def __init__(self, name: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "labkit.cli", "events", name, "--format", "json"],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        seen = read_until(self.proc.stderr, b"watching lab", 20)
        assert b"watching lab" in seen, seen
        self.buffer = b""

    def expect(self, wanted: dict, deadline: float = 30) -> list[dict]:
        """Events up to and including the first with all of `wanted`'s items."""
        got = []
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                event = json.loads(line)
                got.append(event)
                if wanted.items() <= event.items():
                    return got
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, end - time.monotonic()))
            chunk = os.read(self.proc.stdout.fileno(), 65536) if ready else b""
            if not chunk:
                break
            self.buffer += chunk
        raise AssertionError(f"no event like {wanted} among {got}")

    def finish(self) -> int:
        self.proc.communicate(timeout=20)
        return self.proc.returncode


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_events_report_link_down_up_and_a_pod_that_apply_adds(tmp_path, labkit_lab_factory, runtime: str) -> None:
    topology = tmp_path / "events.yaml"
    topology.write_text(EVENTS_LAB.format(extra=""))
    running = labkit_lab_factory(str(topology), runtime=runtime)
    stream = EventStream(running.name)
    try:
        assert in_netns(running, "n1", "ip", "link", "set", "eth0", "down").returncode == 0
        stream.expect({"where": "n1", "kind": "link", "action": "down", "interface": "eth0"})
        assert in_netns(running, "n1", "ip", "link", "set", "eth0", "up").returncode == 0
        stream.expect({"where": "n1", "kind": "link", "action": "up", "interface": "eth0"})
        topology.write_text(EVENTS_LAB.format(extra=EXTRA_POD))
        lab.apply(str(topology), name=running.name, progress=Progress(quiet=True))
        extra_ip = next(p["ip"] for p in lab.status(running.name)[0]["pods"] if p["name"] == "extra")
        seen = stream.expect({"where": "default/extra", "kind": "pod", "action": "started", "ip": extra_ip})
        # the pod's wiring came before the record of it: its route on the node, as the CNI made it
        assert any(e["where"] == "n1" and e["kind"] == "route" and e["dst"] == f"{extra_ip}/32" for e in seen), seen
        lab.down(running.name)
        stream.expect({"kind": "lab", "action": "down"})
        assert stream.finish() == 0
    finally:
        if stream.proc.poll() is None:
            stream.proc.kill()
            stream.proc.wait()
