"""The L2 speaker over IPv6 in hand-built namespaces: Neighbor Solicitations answered for the address the
elected speaker owns, and an unsolicited Neighbor Advertisement moving a client's neighbour entry to the
new node on failover, with no solicitation of the client's own. ULA addresses in namespaces this test makes.

    client (br0, fd00:99::1)  ==bridge==  n1:eth0 (fd00:99::11)   n2:eth0 (fd00:99::12)

The LoadBalancer address is on each node's lo (so a ping is answered by whichever node the client's
neighbour entry names), never on eth0: the kernel does not answer for it there, only the speaker does.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit import processes
from labkit.lb import speaker
from labkit.lean import module_argv

PREFIX = f"lbndp{os.getpid() % 10000}"
CLIENT, NODES = f"{PREFIX}c", {"n1": f"{PREFIX}n1", "n2": f"{PREFIX}n2"}
LB_IP = "fd00:99::240"
WITHIN = 3.0  # seconds: a speaker polls the others every 50 ms and announces at once


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=30)


def in_ns(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *argv, check=check)


def mac(ns: str, ifname: str) -> str:
    return json.loads(sh("ip", "-n", ns, "-j", "link", "show", ifname).stdout)[0]["address"]


def neighbour(ip: str) -> dict:
    found = json.loads(sh("ip", "-n", CLIENT, "-6", "-j", "neigh", "show", ip, "dev", "br0").stdout or "[]")
    return found[0] if found else {}


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[Path]:
    made: list[str] = []
    try:
        for ns in (CLIENT, *NODES.values()):
            sh("ip", "netns", "add", ns)
            made.append(ns)
            in_ns(ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
                  "net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", CLIENT, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", CLIENT, "addr", "add", "fd00:99::1/64", "dev", "br0", "nodad")
        sh("ip", "-n", CLIENT, "link", "set", "br0", "up")
        for i, (node, ns) in enumerate(NODES.items(), start=1):
            sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"p{node}", "netns", CLIENT)
            sh("ip", "-n", CLIENT, "link", "set", f"p{node}", "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"fd00:99::1{i}/64", "dev", "eth0", "nodad")
            sh("ip", "-n", ns, "addr", "add", f"{LB_IP}/128", "dev", "lo")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        yield tmp_path
    finally:
        for ns in made:
            sh("ip", "netns", "del", ns, check=False)


def config(folder: Path, node: str) -> Path:
    path = folder / f"{node}.json"
    path.write_text(json.dumps({
        "node": node, "interfaces": ["eth0"], "announcing": str(folder / f"{node}.announcing"),
        "pid_files": {n: str(folder / f"{n}.pid") for n in NODES},
        "services": [{"service": "default/web", "ip": LB_IP, "candidates": ["n1", "n2"], "interfaces": []},
                     {"service": "default/web", "ip": "192.0.2.40", "candidates": ["n1", "n2"], "interfaces": []}],
    }))
    return path


def start(folder: Path, node: str) -> subprocess.Popen:
    proc = subprocess.Popen(["ip", "netns", "exec", NODES[node], *module_argv(
        "labkit.lb.speaker", "--config", str(config(folder, node)))], stdin=subprocess.DEVNULL)
    until(lambda: speaker.alive(str(folder / f"{node}.pid")), f"speaker {node} did not start")
    return proc


def until(condition, what: str) -> None:
    deadline = time.monotonic() + WITHIN
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {WITHIN:.0f} s")
        time.sleep(0.02)


def test_the_elected_speaker_answers_solicitations_and_hands_over_with_an_unsolicited_advertisement(
        lan: Path) -> None:
    speakers: dict[str, subprocess.Popen] = {}
    try:
        for node in NODES:
            speakers[node] = start(lan, node)
        until(lambda: json.loads((lan / "n1.announcing").read_text()) == sorted([LB_IP, "192.0.2.40"]),
              "n1 (the first candidate) did not take the addresses")
        assert not (lan / "n2.announcing").exists()  # it answers for nothing
        assert neighbour(LB_IP) == {}
        assert in_ns(CLIENT, "ping", "-6", "-c1", "-W2", LB_IP).returncode == 0  # solicited, answered, reached
        entry = neighbour(LB_IP)
        assert entry["lladdr"] == mac(NODES["n1"], "eth0") and "REACHABLE" in entry["state"], entry
        # the speaker joined the address's solicited-node group (ff02::1:ff00:240) on eth0: MLD for a switch
        groups = sh("ip", "-n", NODES["n1"], "-6", "maddr", "show", "dev", "eth0").stdout
        assert "ff02::1:ff00:240" in groups, groups

        processes.stop([processes.identify(speakers["n1"].pid)])  # n1's speaker goes: n2 takes over
        n2_mac = mac(NODES["n2"], "eth0")
        until(lambda: neighbour(LB_IP).get("lladdr") == n2_mac,
              "the client's entry did not move to n2 (no unsolicited Neighbor Advertisement)")
        assert json.loads((lan / "n2.announcing").read_text()) == sorted([LB_IP, "192.0.2.40"])
        assert "ff02::1:ff00:240" in sh("ip", "-n", NODES["n2"], "-6", "maddr", "show", "dev", "eth0").stdout
        assert in_ns(CLIENT, "ping", "-6", "-c1", "-W2", LB_IP).returncode == 0
    finally:
        for proc in speakers.values():
            proc.terminate()
            proc.wait(timeout=10)
