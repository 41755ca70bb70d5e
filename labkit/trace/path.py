"""From each namespace's trace events to the probe's path, hop by hop, in Kubernetes terms. Pure.

Every namespace the probe may cross had the trace table and a monitor; those it crossed printed
events. A namespace's events are split into the probe (its first packet, tagged by our
`probe-*` chains), the reply (`reply-*`) and the vxlan packet carrying either (`encap-*`).
Hops are ordered by the TTL the packet came in with (each router takes one off), the sender
first: what the kernel did, with no model of the lab needed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from labkit.families import host_port
from labkit.trace.nftrace import TABLE_PREFIX, Event, Monitored, Packet

PLUMBING = re.compile(r"^(jump|goto) \S+$|^ct state new jump |^meta mark & 0x[0-9a-f]+ == 0x0+ return$|"
                      r"^meta mark set meta mark [|^] 0x[0-9a-f]+$")
DNAT = re.compile(r"dnat (?:ip6? )?to (\S+)")  # `dnat ip6 to [fd00::5]:80` in an inet table
_COMMENT = re.compile(r'comment "([^"]*)"')


@dataclass
class Rule:
    """An nftables rule that matched the packet, with what it means."""

    table: str
    chain: str
    rule: str
    verdict: str | None
    meaning: str | None = None

    @property
    def plumbing(self) -> bool:
        return self.meaning is None


@dataclass
class Hop:
    """The packet in one namespace: in and out, the route that matched, the rules that acted."""

    name: str
    kind: str  # "node" | "pod"
    iif: str | None = None  # None: sent from here
    oif: str | None = None  # None: delivered here, or dropped
    packet_in: str | None = None
    packet_out: str | None = None
    ttl: int | None = None
    outcome: str = "forwarded"  # "sent" | "forwarded" | "delivered" | "dropped"
    route: str | None = None
    route_query: dict[str, str] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)
    encap: str | None = None  # "vxlan 172.31.0.2 -> 172.31.0.4 udp/8472 via eth0"
    dropped_by: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("route_query")
        return out


@dataclass
class Direction:
    """One packet's way: the probe's or its reply's."""

    hops: list[Hop] = field(default_factory=list)

    @property
    def dropped(self) -> Hop | None:
        return next((h for h in self.hops if h.outcome == "dropped"), None)


def meaning(table: str, chain: str, rule: str, verdict: str | None) -> str | None:
    """What a matched rule did, said in Kubernetes terms; None for plumbing (jumps, mark checks)."""
    comment = _COMMENT.search(rule)
    text = comment.group(1) if comment else None
    if table == "labkit-policy":
        if verdict == "drop" or rule.rstrip().endswith("drop") or (text and text.startswith("denied by")):
            return text.replace("denied by", "dropped by", 1) if text else f"dropped by NetworkPolicy ({chain})"
        if text and verdict == "return":
            return f"allowed by NetworkPolicy {text}"
        if rule.startswith("ct state established,related accept"):
            return "allowed: reply of an allowed connection"
        if re.match(r"ip6? saddr @node-ips\S* accept", rule):
            return "allowed: sent by the node itself"
        return None
    if table == "labkit-proxy":
        if "vmap @service-ips" in rule and verdict and verdict.startswith("goto "):
            return f"service lookup: ClusterIP matched ({verdict[5:].split('-', 2)[-1]})"
        if "vmap @service-nodeports" in rule and verdict and verdict.startswith("goto "):
            return f"service lookup: NodePort matched ({verdict[5:].split('-', 2)[-1]})"
        if "@no-endpoint" in rule:
            return "service port without endpoints"
        if verdict and verdict.startswith("goto endpoint-"):
            ip, _, port = verdict.rpartition("__")[2].partition("/")
            return f"{text or 'service'}: picked endpoint {host_port(_chain_address(ip), port)}"
        if text and text.startswith("endpoint ") and DNAT.search(rule):
            return f"DNAT to {text}"
        dnat = DNAT.search(rule)
        if dnat:
            return f"DNAT to {dnat.group(1)}"
        if rule.startswith("masquerade"):
            return text or "masquerade: the source becomes the node's address"
        if text and "jump mark-for-masquerade" in rule:
            return f"{text}: marked for masquerade"
        if "jump mark-for-masquerade" in rule:
            return "marked for masquerade (client outside the pod network, or a pod reaching itself)"
        if text:
            return text
        return None
    if table.startswith(TABLE_PREFIX):
        return None
    if "masquerade" in rule or "snat" in rule or "dnat" in rule:
        return text or rule
    return text


def _chain_address(text: str) -> str:
    """The endpoint's address in a chain name: as it is, or an IPv6 address whose ':' the proxy wrote as '.'
    (`fd00.10.244.1..3`: chain names keep to letters, digits and a few marks)."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    try:
        return str(ipaddress.IPv6Address(text.replace(".", ":")))
    except ValueError:
        return text


def _kind_of(chain: str) -> str | None:
    for kind in ("probe", "reply", "encap"):
        if chain.startswith(kind + "-"):
            return kind
    return None


def split(events: list[Event]) -> dict[str, list[list[Event]]]:
    """Events grouped per packet (trace id) and tagged probe / reply / encap by our chain whose rule
    fired first; a trace id our chains did not tag (the same packet re-entering, e.g. after
    loopback) belongs with the last tagged one."""
    by_id: dict[str, list[Event]] = {}
    order: list[str] = []
    for e in events:
        if e.trace_id not in by_id:
            by_id[e.trace_id] = []
            order.append(e.trace_id)
        by_id[e.trace_id].append(e)
    out: dict[str, list[list[Event]]] = {"probe": [], "reply": [], "encap": []}
    last: str | None = None
    for tid in order:
        group = by_id[tid]
        tag = next((_kind_of(e.chain) for e in group if e.kind == "rule" and e.table.startswith(TABLE_PREFIX)), None)
        if tag is None and last is not None and out[last]:
            out[last][-1].extend(group)
        elif tag is not None:
            out[tag].append(list(group))
            last = tag
    return out


def _endpoints(p: Packet | None) -> str | None:
    return p.endpoints() if p else None


def hop_from(name: str, kind: str, events: list[Event]) -> Hop:
    """One namespace's events for one packet -> its hop."""
    packets = [e for e in events if e.kind == "packet" and e.packet is not None]
    first = packets[0].packet if packets else None
    hop = Hop(name=name, kind=kind)
    if first is not None:
        hop.iif, hop.ttl, hop.packet_in = first.iif, first.ttl, first.endpoints()
    sent = any(e.chain.endswith("-out") and e.table.startswith(TABLE_PREFIX) for e in events)
    if sent:
        hop.iif = None
    routed = next((e.packet for e in packets if e.packet and e.packet.oif), None)
    if routed is not None:
        q = {"daddr": routed.daddr or ""}
        if routed.iif and not sent:
            q.update(saddr=routed.saddr or "", iif=routed.iif)
        hop.route_query = q
    for e in events:
        if e.kind == "rule" and not e.table.startswith(TABLE_PREFIX) and e.rule is not None:
            hop.rules.append(Rule(e.table, e.chain, e.rule, e.verdict, meaning(e.table, e.chain, e.rule, e.verdict)))
        elif e.kind == "policy" and e.verdict == "drop" and not e.table.startswith(TABLE_PREFIX):
            hop.rules.append(Rule(e.table, e.chain, "policy drop", "drop", f"dropped by chain policy {e.chain}"))
    postrouting = [e.packet for e in packets if e.chain == "seen-postrouting" and e.table.startswith(TABLE_PREFIX)]
    delivered = any(e.chain == "seen-input" and e.table.startswith(TABLE_PREFIX) for e in events)
    drop = next((r for r in hop.rules if r.verdict == "drop" or (r.verdict or "").startswith("reject")), None)
    if postrouting and postrouting[-1] is not None:
        hop.oif, hop.packet_out = postrouting[-1].oif, postrouting[-1].endpoints()
        hop.outcome = "sent" if sent else "forwarded"
    elif delivered:
        hop.outcome = "delivered"
    elif drop is not None or packets:
        hop.outcome = "dropped"
        hop.dropped_by = (drop.meaning or f"{drop.table} {drop.chain}: {drop.rule}") if drop else "no route onward"
    return hop


def encap_text(groups: list[list[Event]]) -> str | None:
    for group in groups:
        for e in group:
            if e.kind == "packet" and e.packet and e.packet.oif and e.packet.saddr:
                return f"vxlan {e.packet.saddr} -> {e.packet.daddr} udp/{e.packet.dport} via {e.packet.oif}"
    for group in groups:
        for e in group:
            if e.kind == "packet" and e.packet and e.packet.iif:
                return f"vxlan {e.packet.saddr} -> {e.packet.daddr} udp/{e.packet.dport} in {e.packet.iif}"
    return None


def _is_redirect(group: list[Event]) -> bool:
    first = next((e.packet for e in group if e.kind == "packet" and e.packet is not None), None)
    return first is not None and (first.proto, first.flags) in (("icmp", "redirect"), ("icmpv6", "nd-redirect"))


def build(monitored: Mapping[str, Monitored], kinds: Mapping[str, str]) -> tuple[Direction, Direction]:
    """The probe's and the reply's paths from every namespace's events (`kinds`: name -> node | pod)."""
    probe, reply = Direction(), Direction()
    for name, mon in monitored.items():
        parts = split(mon.events)
        # An ICMP redirect (a router sending the probe back out the interface it came in on) is
        # related to the probe's connection, but it is not the reply.
        parts["reply"] = [g for g in parts["reply"] if not _is_redirect(g)]
        for direction, groups in ((probe, parts["probe"]), (reply, parts["reply"])):
            if groups:
                hop = hop_from(name, kinds.get(name, "node"), groups[0])
                if groups is parts["probe"] or hop.outcome != "dropped" or hop.rules:
                    direction.hops.append(hop)
        encap = encap_text(parts["encap"])
        if encap:
            for hop in probe.hops:
                if hop.name == name:
                    hop.encap = encap
    for hop in reply.hops:
        if hop.oif and hop.oif.startswith("flannel."):
            hop.encap = f"vxlan via {hop.oif}"
    for direction in (probe, reply):
        # a bridge (cni.mode: bridge) forwards without lowering the TTL: among equal TTLs the
        # sender comes first and the receiver last
        direction.hops.sort(key=lambda h: (-(h.ttl or 0), {"sent": 0, "delivered": 2}.get(h.outcome, 1)))
    return probe, reply
