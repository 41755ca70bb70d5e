"""nftables tracing for one probe: the temporary table that marks it, and `nft monitor`'s lines read back. Pure.

`nft monitor` (all events, text: nft 1.0.6 has no JSON for traces) prints, per namespace, the
ruleset changes it sees and one line per trace event:

    trace id 7e80d85b ip labkit-proxy services packet: iif "veth1" ip saddr 10.244.0.2 ...
    trace id 7e80d85b ip labkit-proxy services rule ip daddr . meta l4proto . th dport vmap @service-ips
        (verdict goto service-...)      [one line]
    trace id 7e80d85b inet labkit-policy forward policy accept

Seeing a change of our own table tells that the monitor listens (nothing to wait for by the
clock); the chain `end-<token>` added last tells that every event of the trace has been read.

An IPv4 probe is marked from a `table ip`; an IPv6 probe from a `table inet` (its rules match
`ip6 dscp`, and the vxlan packet carrying it may itself be IPv4 or IPv6). IPv6 packets show
`ip6 saddr`, `ip6 hoplimit`, `ip6 nexthdr` and `icmpv6 type`, read like their IPv4 fields.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

from labkit import templating
from labkit.families import host_port

TABLE = "labkit-trace"
TABLE_PREFIX = TABLE  # every table a trace event of ours comes from starts with it
VXLAN_PORT = 8472
_TRACE = re.compile(r"^trace id (?P<id>[0-9a-f]+) (?P<family>\w+) (?P<table>\S+) (?P<chain>\S+) (?P<rest>.*?)\s*$")
_VERDICT = re.compile(r"\(verdict (?P<verdict>[^)]*)\)$")
_FIELD = re.compile(r'(?P<key>iif|oif|ip6? saddr|ip6? daddr|ip6? dscp|ip ttl|ip6 hoplimit|ip protocol|ip6 nexthdr|'
                    r'tcp sport|tcp dport|udp sport|udp dport|tcp flags|icmp type|icmpv6 type|icmp id) '
                    r'(?P<value>"[^"]*"|== \S+|\S+)')
NFT_FAMILY = {4: "ip", 6: "inet"}  # the trace table's family for a probe of each address family


@dataclass(frozen=True)
class Marker:
    """What picks out one trace's probe: a table name, the DSCP, the conntrack label, the source port."""

    token: str
    dscp: int
    label: int
    sport: int
    family: int = 4  # the probe's address family: its table is `ip` (4) or `inet` (6)

    @property
    def table(self) -> str:
        return TABLE

    @property
    def nft_family(self) -> str:
        return NFT_FAMILY[self.family]

    @property
    def end_marker(self) -> str:
        """The monitor line that comes after every event of this trace (see `end_text`)."""
        return f"add chain {self.nft_family} {TABLE} end-{self.token}"

    @property
    def tos(self) -> int:
        return self.dscp << 2

    @classmethod
    def new(cls, family: int = 4) -> Marker:
        # DSCPs xxxx11 are for experiments and local use (RFC 2474 pool 2): no lab traffic carries them
        return cls(token=secrets.token_hex(4), dscp=4 * secrets.randbelow(16) + 3,
                   label=64 + secrets.randbelow(64), sport=40000 + secrets.randbelow(20000), family=family)


def table_text(marker: Marker, protocol: str) -> str:
    """The `nft -f` text that adds the trace table in one namespace."""
    if protocol not in ("tcp", "udp", "icmp"):
        raise ValueError(f"protocol {protocol!r}")
    return templating.render("trace.nft.j2", trim=True, table=marker.table, token=marker.token,
                             dscp=marker.dscp, label=marker.label, protocol=protocol, vxlan_port=VXLAN_PORT,
                             family=marker.family, nft_family=marker.nft_family)


def end_text(marker: Marker) -> str:
    """Ends a trace in one namespace: a chain named for it (the monitor's last line of it), then the table goes."""
    fam = marker.nft_family
    return f"add chain {fam} {TABLE} end-{marker.token}\ndelete table {fam} {TABLE}\n"


def delete_text(marker: Marker | None = None) -> str:
    """Removes the trace table if it is there (idempotent): the marker's, or without one, of either family."""
    families = [marker.nft_family] if marker is not None else list(NFT_FAMILY.values())
    return "".join(f"table {fam} {TABLE} {{\n}}\ndelete table {fam} {TABLE}\n" for fam in families)


@dataclass
class Packet:
    """The header fields a trace event shows."""

    iif: str | None = None
    oif: str | None = None
    saddr: str | None = None
    daddr: str | None = None
    sport: int | None = None
    dport: int | None = None
    dscp: str | None = None
    ttl: int | None = None
    proto: str | None = None
    flags: str | None = None

    def endpoints(self) -> str:
        s = host_port(self.saddr, self.sport) if self.sport is not None else str(self.saddr)
        d = host_port(self.daddr, self.dport) if self.dport is not None else str(self.daddr)
        return f"{s} -> {d}"


@dataclass
class Event:
    """One trace line: where (family, table, chain) and what (a packet, a rule and its verdict, a policy)."""

    trace_id: str
    family: str
    table: str
    chain: str
    kind: str  # "packet" | "rule" | "policy" | "other"
    rule: str | None = None
    verdict: str | None = None
    packet: Packet | None = None
    text: str = ""


def parse_packet(text: str) -> Packet:
    p = Packet()
    for m in _FIELD.finditer(text):
        key, value = m.group("key"), m.group("value").strip('"')
        if value.startswith("== "):
            value = value[3:]
        if key in ("iif", "oif"):
            setattr(p, key, value)
        elif key in ("ip saddr", "ip6 saddr"):
            p.saddr = value
        elif key in ("ip daddr", "ip6 daddr"):
            p.daddr = value
        elif key in ("ip dscp", "ip6 dscp"):
            p.dscp = value
        elif key in ("ip ttl", "ip6 hoplimit"):  # the hop limit is IPv6's TTL
            p.ttl = int(value) if value.isdigit() else None
        elif key in ("ip protocol", "ip6 nexthdr"):
            p.proto = value
        elif key in ("tcp sport", "udp sport") and p.sport is None and value.isdigit():
            p.sport, p.proto = int(value), key.split()[0]
        elif key in ("tcp dport", "udp dport") and p.dport is None and value.isdigit():
            p.dport, p.proto = int(value), key.split()[0]
        elif key in ("icmp type", "icmpv6 type"):
            p.proto, p.flags = key.split()[0], value
        elif key == "tcp flags":
            p.flags = value
        elif key == "icmp id" and value.isdigit():
            p.sport = p.sport if p.sport is not None else None
    return p


def parse_line(line: str) -> Event | None:
    """One line of `nft monitor`; None for what is not a trace event (ruleset changes, comments)."""
    m = _TRACE.match(line.strip())
    if not m:
        return None
    rest = m.group("rest")
    base = dict(trace_id=m.group("id"), family=m.group("family"), table=m.group("table"), chain=m.group("chain"),
                text=rest)
    if rest.startswith("packet:"):
        return Event(**base, kind="packet", packet=parse_packet(rest[len("packet:"):]))
    verdict = _VERDICT.search(rest)
    if rest.startswith(("rule ", "unknown rule")):
        rule = rest[len("rule "):] if rest.startswith("rule ") else rest
        if verdict:
            rule = rule[:verdict.start() - len(rest) + len(rule)].strip()
        return Event(**base, kind="rule", rule=rule, verdict=verdict.group("verdict") if verdict else None)
    if rest.startswith("policy "):
        return Event(**base, kind="policy", verdict=(rest[len("policy "):].split() or [""])[0])
    return Event(**base, kind="other", verdict=verdict.group("verdict") if verdict else rest.strip())


@dataclass
class Monitored:
    """What one namespace's monitor printed between our table's add and delete."""

    name: str
    events: list[Event] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
