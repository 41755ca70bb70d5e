"""Who announces each LoadBalancer address: the L2 speakers' configs and processes, and the BGP prefixes.

    write_configs(lab, nodes, services)    # every k8s-node's speaker config (atomic; speakers re-read it)
    start_speakers(lab, {node: netns_path}) # the ones not running, entered into their node's namespace
    announcing(lab, nodes)                 # ip -> the node whose speaker answers for it now
    bgp_prefixes(services)                 # node -> the /32s and /128s its BGP daemon announces

A dual-stack LoadBalancer (`ips` of both families) is one entry per address with the same candidates
(MetalLB elects by the first address): the elected speaker answers ARP for the IPv4 one and NDP for
the IPv6 one.

A speaker's files live in the lab's state folder (labkit.paths: lb/NODE.json, .pid, .announcing), so
`down` stops it by its pid file and `leftovers` finds it by its command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import Any

from labkit import files as labfiles
from labkit import paths, processes
from labkit.errors import LabkitError
from labkit.lean import module_argv

START_TIMEOUT = 5.0  # seconds for a speaker to write its pid file
ANNOUNCE_TIMEOUT = 5.0  # seconds for every address with a candidate to be answered for


def l2_services(services: Sequence[Any]) -> list[dict[str, Any]]:
    """The L2 addresses (each of a Service's families) and their candidates in election order, from the
    service views."""
    found = []
    for svc in services:
        lb = getattr(svc, "load_balancer", None) or {}
        if lb.get("ip") and lb.get("l2_nodes"):
            for ip in lb.get("ips") or [lb["ip"]]:
                found.append({"service": svc.key, "ip": ip, "candidates": list(lb.get("l2_candidates", [])),
                              "interfaces": list(lb.get("interfaces", []))})
    return found


def bgp_prefixes(services: Sequence[Any]) -> dict[str, list[tuple[str, str]]]:
    """node -> [(prefix, why)]: each BGP-mode address as a /32 (IPv4) or /128 (IPv6) from the nodes allowed
    to announce it."""
    found: dict[str, list[tuple[str, str]]] = {}
    for svc in sorted(services, key=lambda s: s.key):
        lb = getattr(svc, "load_balancer", None) or {}
        for node in lb.get("bgp_announcing", []) if lb.get("ip") else []:
            for ip in lb.get("ips") or [lb["ip"]]:
                found.setdefault(node, []).append((f"{ip}/{128 if ':' in ip else 32}",
                                                   f"LoadBalancer of service {svc.key}"))
    return found


def write_configs(lab: str, nodes: Mapping[str, Sequence[str]], services: Sequence[Any]) -> None:
    """Every speaker's config: `nodes` maps each k8s-node to its interfaces (the default to answer on)."""
    files = paths.lab(lab)
    os.makedirs(files.lb_dir, mode=0o755, exist_ok=True)
    entries = l2_services(services)
    pid_files = {n: files.lb_pid_file(n) for n in nodes}
    for node, interfaces in nodes.items():
        config = {"node": node, "interfaces": list(interfaces), "pid_files": pid_files,
                  "announcing": files.lb_announcing(node), "services": entries}
        text = json.dumps(config, indent=1, sort_keys=True) + "\n"
        path = files.lb_config(node)
        try:
            with open(path, encoding="utf-8") as fh:
                if fh.read() == text:
                    continue
        except OSError:
            pass
        labfiles.write_atomic(path, text, mode=0o644)


def running(lab: str, node: str) -> processes.ProcessId | None:
    files = paths.lab(lab)
    return processes.recorded(files.lb_pid_file(node), marker=files.dir)


def start_speakers(lab: str, netns_paths: Mapping[str, str], python: str | None = None) -> None:
    """Start the speaker of each node that has none running; return once each has written its pid file."""
    files = paths.lab(lab)
    started = []
    for node, netns_path in netns_paths.items():
        if running(lab, node) is not None:
            continue
        log = os.path.join(files.lb_dir, f"{node}.log")
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        with os.fdopen(fd, "ab") as out:
            proc = subprocess.Popen(["nsenter", f"--net={netns_path}", "--",
                                     *module_argv("labkit.lb.speaker", "--config", files.lb_config(node),
                                                  python=python)],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        started.append((node, proc, log))
    deadline = time.monotonic() + START_TIMEOUT
    for node, proc, log in started:
        while running(lab, node) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                with open(log, encoding="utf-8", errors="replace") as fh:
                    tail = fh.read()[-500:].strip()
                raise LabkitError(f"the L2 speaker of node {node} did not start: {tail or 'no output'}")
            time.sleep(0.01)


def announcing(lab: str, nodes: Sequence[str]) -> dict[str, str]:
    """ip -> the node whose speaker answers ARP for it now (only speakers that run count)."""
    files = paths.lab(lab)
    found: dict[str, str] = {}
    for node in nodes:
        if running(lab, node) is None:
            continue
        try:
            with open(files.lb_announcing(node), encoding="utf-8") as fh:
                ips = json.loads(fh.read(1 << 20))
        except (OSError, ValueError):
            continue
        for ip in ips if isinstance(ips, list) else []:
            found.setdefault(str(ip), node)
    return found


def wait_announced(lab: str, nodes: Sequence[str], services: Sequence[Any],
                   timeout: float = ANNOUNCE_TIMEOUT) -> None:
    """Until every L2 address that has a candidate is answered for by its elected node (polled, bounded)."""
    wanted = {e["ip"]: e["candidates"] for e in l2_services(services) if e["candidates"]}
    deadline = time.monotonic() + timeout
    while True:
        live = {n for n in nodes if running(lab, n) is not None}
        now = announcing(lab, nodes)
        lacking = [ip for ip, cands in wanted.items()
                   if now.get(ip) != next((c for c in cands if c in live), None)]
        if not lacking:
            return
        if time.monotonic() > deadline:
            raise LabkitError(f"no speaker answers for {', '.join(lacking)} after {timeout:.0f} s "
                              f"(see {paths.lab(lab).lb_dir}/*.log)")
        time.sleep(0.02)
