"""A MetalLB L2 speaker for one k8s-node: answers ARP (IPv4) and NDP Neighbor Solicitations (IPv6) for the
LoadBalancer addresses this node wins, and announces each it takes over with gratuitous ARP or unsolicited
Neighbor Advertisements. Standard library only (it starts in ~10 ms, beside pods).

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

IPv6 (RFC 4861), as MetalLB's NDP responder: for each address it answers for, the speaker joins the
address's solicited-node multicast group on the interface (an MLD report, so a snooping switch passes
the solicitations on) and reads ICMPv6 Neighbor Solicitations from a packet socket whose kernel filter
(classic BPF) lets nothing else through; it answers one naming an address it owns with a solicited
Neighbor Advertisement (S and O flags, its MAC as target link-layer address), and on takeover sends
unsolicited ones (O flag, to all-nodes ff02::1) on the gratuitous ARP schedule: a neighbour that holds
the address updates its entry to the new MAC. The advertisements come from the LoadBalancer address
itself, as Linux answers for an address of its own. Nothing of this opens unless an IPv6 address is listed.
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
ETH_P_IPV6 = 0x86DD
ICMPV6 = 58
NS, NA = 135, 136  # ICMPv6 Neighbor Solicitation / Advertisement
NA_SOLICITED, NA_OVERRIDE = 0x40000000, 0x20000000
ALL_NODES = b"\xff\x02" + b"\x00" * 13 + b"\x01"
SO_ATTACH_FILTER = 26
# Classic BPF over an Ethernet frame: IPv6, next header ICMPv6, ICMPv6 type Neighbor Solicitation; else drop.
NS_FILTER = (
    (0x28, 0, 0, 12),            # ldh [12]         ethertype
    (0x15, 0, 5, ETH_P_IPV6),    # jeq IPv6 ? next : drop
    (0x30, 0, 0, 20),            # ldb [20]         IPv6 next header
    (0x15, 0, 3, ICMPV6),        # jeq ICMPv6 ? next : drop
    (0x30, 0, 0, 54),            # ldb [54]         ICMPv6 type
    (0x15, 0, 1, NS),            # jeq NS ? accept : drop
    (0x06, 0, 0, 0xFFFF),        # ret accept
    (0x06, 0, 0, 0),             # ret drop
)
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


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def neighbor_advertisement(src_mac: bytes, eth_dst: bytes, target: bytes, dst_ip: bytes, flags: int) -> bytes:
    """An Ethernet frame holding an ICMPv6 Neighbor Advertisement for `target` (from `target` itself, hop
    limit 255 as RFC 4861 requires) with this MAC as its target link-layer address option."""
    icmp = struct.pack("!BBHI", NA, 0, 0, flags) + target + struct.pack("!BB", 2, 1) + src_mac
    pseudo = target + dst_ip + struct.pack("!I3xB", len(icmp), ICMPV6)
    icmp = icmp[:2] + struct.pack("!H", _checksum(pseudo + icmp)) + icmp[4:]
    ipv6 = struct.pack("!IHBB", 6 << 28, len(icmp), ICMPV6, 255) + target + dst_ip
    return eth_dst + src_mac + struct.pack("!H", ETH_P_IPV6) + ipv6 + icmp


def solicitation(frame: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(sender MAC, sender IPv6, target) of a valid Neighbor Solicitation frame, else None."""
    if len(frame) < 78 or frame[12:14] != b"\x86\xdd" or frame[20] != ICMPV6 or frame[21] != 255:
        return None  # a solicitation that crossed a router (hop limit < 255) is not one to answer
    if frame[54] != NS or frame[55] != 0:
        return None
    sender_mac, sender_ip, target = frame[6:12], frame[22:38], frame[62:78]
    options = frame[78:]
    while len(options) >= 8 and options[1]:  # the source link-layer address option, when given
        if options[0] == 1:
            sender_mac = options[2:8]
        options = options[options[1] * 8:]
    return sender_mac, sender_ip, target


def multicast_mac(ip: bytes) -> bytes:
    """The Ethernet multicast address of an IPv6 multicast group (33:33 and its last 32 bits)."""
    return b"\x33\x33" + ip[12:16]


def solicited_node(ip: bytes) -> bytes:
    """The solicited-node multicast group of an IPv6 address: ff02::1:ffXX:XXXX (its last 24 bits)."""
    return bytes.fromhex("ff0200000000000000000001ff") + ip[13:16]


def _ns_socket(ifname: str) -> socket.socket:
    """A packet socket on `ifname` that the kernel hands Neighbor Solicitations only."""
    import ctypes  # only a speaker with an IPv6 address pays for it

    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
    try:
        sock.bind((ifname, ETH_P_IPV6))
        program = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *insn) for insn in NS_FILTER))
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                        struct.pack("HP", len(NS_FILTER), ctypes.addressof(program)))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    while True:  # what was queued before the filter was attached (any IPv6 frame)
        try:
            sock.recv(2048)
        except (BlockingIOError, InterruptedError):
            return sock


def _arp(op: int, src_mac: bytes, src_ip: bytes, dst_mac: bytes, dst_ip: bytes, eth_dst: bytes) -> bytes:
    eth = eth_dst + src_mac + struct.pack("!H", ETH_P_ARP)
    return eth + struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + src_mac + src_ip + dst_mac + dst_ip


class Speaker:
    def __init__(self, config_path: str):
        self.config_path = config_path
        self.mtime = 0.0
        self.config: dict = {}
        self.sockets: dict[str, tuple[socket.socket, bytes]] = {}  # ifname -> (socket, its MAC)
        self.ns_sockets: dict[str, socket.socket] = {}  # ifname -> its Neighbor Solicitations (IPv6 only)
        self.groups: set[tuple[str, bytes]] = set()  # (ifname, solicited-node group) joined
        self.mld: socket.socket | None = None  # holds the group memberships (the kernel sends the MLD reports)
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
        if any(":" in svc.get("ip", "") for svc in self.config.get("services", [])):
            for ifname in sorted(self.sockets.keys() - self.ns_sockets.keys()):
                try:
                    self.ns_sockets[ifname] = _ns_socket(ifname)
                except OSError:
                    continue

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
        self.join_groups()
        now = time.monotonic()
        self.garps = {ip: due for ip, due in self.garps.items() if ip in owned}
        for ip in taken:
            self.garps[ip] = (now, now + GARP_FOR)
        self.send_garps(now)
        if changed or taken:
            _write(self.config["announcing"], json.dumps(sorted(owned)) + "\n")

    def join_groups(self) -> None:
        """Membership of each owned IPv6 address's solicited-node group on its interfaces, and no other."""
        wanted = {(ifname, solicited_node(socket.inet_pton(socket.AF_INET6, ip)))
                  for ip, ifnames in self.owned.items() if ":" in ip for ifname in ifnames if ifname in self.sockets}
        if not wanted and not self.groups:
            return
        if self.mld is None:
            self.mld = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        for (ifname, group), option in [(g, socket.IPV6_LEAVE_GROUP) for g in self.groups - wanted] + \
                [(g, socket.IPV6_JOIN_GROUP) for g in wanted - self.groups]:
            try:
                index = struct.pack("@I", socket.if_nametoindex(ifname))
                self.mld.setsockopt(socket.IPPROTO_IPV6, option, group + index)
            except OSError:
                continue
            if option == socket.IPV6_JOIN_GROUP:
                self.groups.add((ifname, group))
            else:
                self.groups.discard((ifname, group))

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
        """Gratuitous ARP for an IPv4 address; an unsolicited Neighbor Advertisement for an IPv6 one."""
        v6 = ":" in ip
        packed = socket.inet_pton(socket.AF_INET6, ip) if v6 else socket.inet_aton(ip)
        for ifname in self.owned.get(ip, ()):
            if ifname in self.sockets:
                sock, mac = self.sockets[ifname]  # a packet socket sends any frame, whatever it reads
                frame = (neighbor_advertisement(mac, multicast_mac(ALL_NODES), packed, ALL_NODES, NA_OVERRIDE) if v6
                         else _arp(2, mac, packed, b"\xff" * 6, packed, b"\xff" * 6))
                try:
                    sock.send(frame)
                except OSError:
                    pass

    def answer_ns(self, ifname: str) -> None:
        """Neighbor Advertisements for the solicitations naming an address this node answers for on `ifname`."""
        sock = self.ns_sockets[ifname]
        _, mac = self.sockets[ifname]
        while True:
            try:
                frame, address = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            if address[2] == socket.PACKET_OUTGOING:  # the node's own solicitations, seen leaving
                continue
            found = solicitation(frame)
            if found is None:
                continue
            sender_mac, sender_ip, target = found
            if ifname not in self.owned.get(socket.inet_ntop(socket.AF_INET6, target), ()):
                continue
            if sender_ip == bytes(16):  # duplicate address detection: tell every node, unsolicited
                reply = neighbor_advertisement(mac, multicast_mac(ALL_NODES), target, ALL_NODES, NA_OVERRIDE)
            else:
                reply = neighbor_advertisement(mac, sender_mac, target, sender_ip, NA_SOLICITED | NA_OVERRIDE)
            try:
                sock.send(reply)
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
            socks = {s.fileno(): (self.answer, name) for name, (s, _) in self.sockets.items()}
            socks.update({s.fileno(): (self.answer_ns, name) for name, s in self.ns_sockets.items()})
            ready, _, _ = select.select(list(socks), [], [], max(0.0, next_look - time.monotonic()))
            for fd in ready:
                handler, name = socks[fd]
                handler(name)


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
