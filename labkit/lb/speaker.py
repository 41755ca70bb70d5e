"""A MetalLB L2 speaker for one k8s-node: answers ARP for the LoadBalancer addresses this node wins, and
announces each it takes over with gratuitous ARP. Standard library only (it starts in ~10 ms, beside pods).

    python -IS -c '<labkit.lean bootstrap>' --config /run/labkit/LAB/lb/NODE.json

Run inside the node's network namespace (nsenter --net). The config (written by labkit.lb, re-read when
it changes) lists, per address, the candidate nodes in MetalLB's election order (sha256 of `node#ip`;
with externalTrafficPolicy: Local only nodes with an endpoint) and the interfaces to answer on. The
speaker answers for an address when it is the first candidate whose speaker runs.

Liveness: every speaker of the lab runs on this one host, so each reads the others' pid files (pid and
start time, as labkit.processes writes them) and /proc: a stopped speaker is seen gone within one poll
(POLL seconds), with no heartbeat protocol, no timers to tune and no false alarm from a busy machine.
MetalLB's speakers learn the same from memberlist's gossip between nodes; a node whose network fails
while its speaker runs is what this leaves out (labkit's nodes share a kernel: their processes do not
fail apart from them).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import sys
import time

POLL = 0.05  # seconds between looks at the other speakers and the config
ETH_P_ARP = 0x0806
# On taking an address over, gratuitous ARP every GARP_EVERY seconds for GARP_FOR seconds, as MetalLB's
# announcer does: a neighbour entry updated less than locktime (1 s) ago ignores a new address, so one
# burst right after another takeover would be lost.
GARP_EVERY = 1.1
GARP_FOR = 5.0


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if not fields or fields[0] in ("Z", "X") or len(fields) <= 19:
        return None
    return int(fields[19])


def alive(pid_file: str) -> bool:
    """The pid file names a process that still runs with the recorded start time."""
    try:
        with open(pid_file, encoding="ascii") as fh:
            pid, start = (int(f) for f in fh.read(64).split()[:2])
    except (OSError, ValueError):
        return False
    return pid > 1 and _start_time(pid) == start


def owner(candidates: list[str], running: set[str]) -> str | None:
    """The node that answers: the first candidate (MetalLB's order) whose speaker runs."""
    return next((n for n in candidates if n in running), None)


def _write(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _arp(op: int, src_mac: bytes, src_ip: bytes, dst_mac: bytes, dst_ip: bytes, eth_dst: bytes) -> bytes:
    eth = eth_dst + src_mac + struct.pack("!H", ETH_P_ARP)
    return eth + struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + src_mac + src_ip + dst_mac + dst_ip


class Speaker:
    def __init__(self, config_path: str):
        self.config_path = config_path
        self.mtime = 0.0
        self.config: dict = {}
        self.sockets: dict[str, tuple[socket.socket, bytes]] = {}  # ifname -> (socket, its MAC)
        self.owned: dict[str, tuple[str, ...]] = {}  # ip -> interfaces answered on
        self.garps: dict[str, tuple[float, float]] = {}  # ip -> (next gratuitous ARP, last one), monotonic

    def load(self) -> None:
        try:
            mtime = os.stat(self.config_path).st_mtime
        except OSError:
            return
        if mtime == self.mtime:
            return
        with open(self.config_path, encoding="utf-8") as fh:
            self.config = json.load(fh)
        self.mtime = mtime
        wanted = set(self.config.get("interfaces", []))
        for svc in self.config.get("services", []):
            wanted.update(svc.get("interfaces") or [])
        for ifname in sorted(wanted - self.sockets.keys()):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
            try:
                sock.bind((ifname, ETH_P_ARP))
            except OSError:  # no such interface in this node: nothing to answer on there
                sock.close()
                continue
            sock.setblocking(False)
            # The interface's MAC as this namespace sees it (/sys is the host's: nsenter --net keeps its mounts).
            self.sockets[ifname] = (sock, sock.getsockname()[4][:6])

    def elect(self) -> None:
        me = self.config.get("node", "")
        pid_files = self.config.get("pid_files", {})
        running = {me} | {n for n, path in pid_files.items() if n != me and alive(path)}
        owned: dict[str, tuple[str, ...]] = {}
        default_ifs = tuple(self.config.get("interfaces", []))
        for svc in self.config.get("services", []):
            if owner(svc.get("candidates", []), running) == me:
                owned[svc["ip"]] = tuple(svc.get("interfaces") or default_ifs)
        taken = [ip for ip in owned if owned[ip] != self.owned.get(ip)]
        changed = owned.keys() != self.owned.keys()
        self.owned = owned
        now = time.monotonic()
        self.garps = {ip: due for ip, due in self.garps.items() if ip in owned}
        for ip in taken:
            self.garps[ip] = (now, now + GARP_FOR)
        self.send_garps(now)
        if changed or taken:
            _write(self.config["announcing"], json.dumps(sorted(owned)) + "\n")

    def send_garps(self, now: float) -> None:
        for ip, (due, last) in list(self.garps.items()):
            if now < due:
                continue
            self.garp(ip)
            if due + GARP_EVERY <= last:
                self.garps[ip] = (due + GARP_EVERY, last)
            else:
                del self.garps[ip]

    def garp(self, ip: str) -> None:
        packed = socket.inet_aton(ip)
        for ifname in self.owned.get(ip, ()):
            if ifname in self.sockets:
                sock, mac = self.sockets[ifname]
                try:
                    sock.send(_arp(2, mac, packed, b"\xff" * 6, packed, b"\xff" * 6))
                except OSError:
                    pass

    def answer(self, ifname: str) -> None:
        sock, mac = self.sockets[ifname]
        while True:
            try:
                frame = sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            if len(frame) < 42:
                continue
            htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", frame[14:22])
            if (htype, ptype, hlen, plen, op) != (1, 0x0800, 6, 4, 1):
                continue
            sender_mac, sender_ip, target_ip = frame[22:28], frame[28:32], frame[38:42]
            ip = socket.inet_ntoa(target_ip)
            if ifname in self.owned.get(ip, ()) and sender_ip != target_ip:
                try:
                    sock.send(_arp(2, mac, target_ip, sender_mac, sender_ip, sender_mac))
                except OSError:
                    pass

    def run(self) -> None:
        next_look = 0.0
        while True:
            now = time.monotonic()
            if now >= next_look:
                self.load()
                self.elect()
                next_look = now + POLL
            else:
                self.send_garps(now)
            socks = {s.fileno(): name for name, (s, _) in self.sockets.items()}
            ready, _, _ = select.select(list(socks), [], [], max(0.0, next_look - time.monotonic()))
            for fd in ready:
                self.answer(socks[fd])


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] != "--config":
        print("usage: python -m labkit.lb.speaker --config FILE", file=sys.stderr)
        return 2
    speaker = Speaker(args[1])
    speaker.load()
    if not speaker.config:
        print(f"speaker: cannot read {args[1]}", file=sys.stderr)
        return 1
    pid_file = speaker.config["pid_files"][speaker.config["node"]]
    announcing = speaker.config["announcing"]

    def stop(*_: object) -> None:
        for path in (pid_file, announcing):
            try:
                os.unlink(path)
            except OSError:
                pass
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    _write(pid_file, f"{os.getpid()} {_start_time(os.getpid())}\n")
    try:
        speaker.run()
    finally:
        stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
