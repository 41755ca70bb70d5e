"""A node's NetworkPolicy rule set: the compiled model written down as one nftables table. Pure.

Shape (`table inet labkit-policy`, replaced as a whole in one transaction):

- a named interval set of peer addresses per policy rule and family (`peers-<id>-<ns>/<policy>-<dir><n>`
  of type ipv4_addr, `peers6-…` of type ipv6_addr), shared by every pod the rule guards, and a
  set of `address . protocol . port` per egress rule with named ports and family (`named-…`,
  `named6-…`; resolved on each destination pod);
- a chain per isolated pod and direction (`ingress-<id>-<ns>/<pod>`), the same for both of a
  dual-stack pod's addresses: one line per rule and family that `return`s when the traffic is
  allowed (`ip saddr @peers-…`, `ip6 saddr @peers6-…`; a rule with no peer of a family has no
  line for it), `drop` at the end;
- verdict maps `ingress-pods` / `egress-pods` from a local pod's IPv4 address to its chain,
  and `ingress-pods6` / `egress-pods6` from its IPv6 address;
- base chains: `forward` (pod traffic crossing the node; DNAT to a Service's
  endpoint has happened in prerouting, so pods are judged by their own
  addresses) checks the source pod's egress, then the destination pod's ingress;
  `input` checks a local pod's egress towards the node itself. Replies of
  allowed connections pass first. Nothing hooks `output`: what the node itself
  sends (kubelet probes) is always allowed.

The IPv6 parts (`node-ips6`, the `-pods6` maps, their base-chain lines) are written only when
the node or a pod it guards has an IPv6 address, so an IPv4-only lab's table is what it was;
with them comes an accept of ICMPv6 neighbour discovery (types 133-137) before any pod is
judged: a pod that cannot resolve its gateway cannot talk at all, and IPv4's ARP is never
seen by an `inet` table either.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

from labkit import templating
from labkit.policy.compile import Allow, Direction, NodePolicy, RuleRef

DEFAULT_TABLE = "labkit-policy"
FAMILY = "inet"
_SAFE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,62}")
_READABLE = 80  # characters of the ns/name kept in a set or chain name; the hash keeps it unique


def _ident(kind: str, *parts: str) -> str:
    digest = base64.b32encode(hashlib.sha256("/".join((kind, *parts)).encode()).digest()).decode()
    return f"{kind}-{digest[:6].lower()}-{'-'.join(parts)[:_READABLE]}"


_ADDR_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}
_MATCH = {4: "ip", 6: "ip6"}  # the payload expression of a family: `ip saddr`, `ip6 saddr`
_SUFFIX = {4: "", 6: "6"}  # set, map and name suffix: IPv4's names are what they were before IPv6


def _family(ip: str) -> int:
    """The family of an address the compiler wrote (canonical text: only IPv6 has a colon)."""
    return 6 if ":" in ip else 4


@dataclass(frozen=True)
class AddressSet:
    name: str
    comment: str
    elements: tuple[str, ...]
    family: int = 4

    @property
    def addr_type(self) -> str:
        return _ADDR_TYPE[self.family]


@dataclass(frozen=True)
class ChainRule:
    """One allow line of a pod chain: peer set, inline ports, or a named-port destination set.

    `family`: the family of the set the line matches (4 or 6); None when it matches no address."""

    comment: str
    peer_set: str | None = None
    ports: tuple[str, ...] | None = None
    destination_set: str | None = None
    family: int | None = None

    @property
    def match(self) -> str:
        return _MATCH[self.family or 4]


@dataclass(frozen=True)
class PodChain:
    name: str
    pod: str
    ips: tuple[str, ...]
    direction: Direction
    comment: str
    rules: tuple[ChainRule, ...]
    drop_comment: str = "nothing above allows it"  # on the final drop: the policies, for labkit trace

    @property
    def ip(self) -> str:
        return self.ips[0]


@dataclass(frozen=True)
class PolicyTable:
    """What the template renders, in a stable order."""

    table: str
    comment: str
    node_ips: tuple[str, ...]
    peer_sets: tuple[AddressSet, ...]
    destination_sets: tuple[AddressSet, ...]
    chains: tuple[PodChain, ...]
    ipv6: bool = False  # whether the IPv6 parts are written (the node or a guarded pod has IPv6)

    def chains_for(self, direction: Direction) -> tuple[PodChain, ...]:
        return tuple(c for c in self.chains if c.direction == direction)

    def node_ips_of(self, family: int) -> tuple[str, ...]:
        return tuple(ip for ip in self.node_ips if _family(ip) == family)

    def map_elements(self, direction: Direction, family: int) -> tuple[tuple[str, str], ...]:
        """(address, chain) of the `<direction>-pods` map of `family`: every local address of a guarded pod."""
        return tuple((ip, c.name) for c in self.chains_for(direction) for ip in c.ips if _family(ip) == family)


def _rule_name(ref: RuleRef) -> tuple[str, str]:
    return ref.policy, f"{ref.direction}{ref.index}"


_SetKey = tuple[RuleRef, int]  # a rule's set of one family; None in the plan's dicts: the rule has none of it


def plan_policy_table(model: NodePolicy, table: str = DEFAULT_TABLE) -> PolicyTable:
    peer_sets: dict[_SetKey, AddressSet | None] = {}
    destination_sets: dict[_SetKey, AddressSet | None] = {}
    chains: list[PodChain] = []
    for guard in (*model.ingress, *model.egress):
        rules = []
        for allow in guard.allows:
            rules.extend(_chain_rules(allow, peer_sets, destination_sets))
        chains.append(PodChain(
            name=_ident(guard.direction, guard.pod),
            pod=guard.pod,
            ips=guard.ips,
            direction=guard.direction,
            comment=_comment(f"{guard.direction} of {guard.pod}; policies {', '.join(guard.policies)}"),
            rules=tuple(rules),
            drop_comment=_comment(f"denied by NetworkPolicy {', '.join(guard.policies)} ({guard.direction} of "
                                  f"{guard.pod}): nothing allows it"),
        ))
    for name, value in (("table", table), ("node name", model.node)):
        if not _SAFE_NAME.fullmatch(value):
            raise ValueError(f"{name} {value!r} is not valid here; valid: letters, digits, '.', '_', '-'")
    return PolicyTable(
        table=table,
        comment=_comment(f"labkit network policies of node {model.node}: generated, replaced as a whole"),
        node_ips=model.node_ips,
        peer_sets=tuple(s for s in peer_sets.values() if s is not None),
        destination_sets=tuple(s for s in destination_sets.values() if s is not None),
        chains=tuple(chains),
        ipv6=6 in model.families,
    )


def _chain_rules(
    allow: Allow, peer_sets: dict[_SetKey, AddressSet | None], destination_sets: dict[_SetKey, AddressSet | None]
) -> list[ChainRule]:
    """The lines of one rule in one pod's chain. A rule's sets are made once, for the first pod it
    guards (every pod it guards shares them: the compiler shares the Allow too)."""
    ref = allow.rule
    comment = _comment(str(ref))
    if allow.matches_nothing:
        return []
    out = []
    if allow.ports is None or allow.ports:
        ports = None if allow.ports is None else tuple(str(p) for p in allow.ports)
        if allow.peers is None:
            out.append(ChainRule(comment, ports=ports))
        else:
            if (ref, 4) not in peer_sets:
                for family in (4, 6):
                    networks = allow.peers_of(family)
                    peer_sets[ref, family] = AddressSet(
                        _ident(f"peers{_SUFFIX[family]}", *_rule_name(ref)),
                        _comment(f"peers of {ref}" + (" (IPv6)" if family == 6 else "")),
                        tuple(str(net) for net in networks), family) if networks else None
            for family in (4, 6):
                peer_set = peer_sets[ref, family]
                if peer_set is not None:  # no peer of a family: the rule allows that family nothing
                    out.append(ChainRule(comment, peer_set=peer_set.name, ports=ports, family=family))
    if allow.destinations:
        named = _comment(f"{ref} named ports")
        if (ref, 4) not in destination_sets:
            for family in (4, 6):
                elements = sorted({str(d) for d in allow.destinations if _family(d.ip) == family})
                destination_sets[ref, family] = AddressSet(
                    _ident(f"named{_SUFFIX[family]}", *_rule_name(ref)), named, tuple(elements),
                    family) if elements else None
        for family in (4, 6):
            destination_set = destination_sets[ref, family]
            if destination_set is not None:
                out.append(ChainRule(named, destination_set=destination_set.name, family=family))
    return out


def _comment(text: str) -> str:
    # Names are validated DNS labels/subdomains, so no quote can appear; nft caps comments at 128 bytes.
    return text if len(text) <= 120 else text[:117] + "..."


def render_policy_table(plan: PolicyTable) -> str:
    return templating.render("netpol.nft.j2", trim=True, plan=plan, family=FAMILY)


def render_node_policies(model: NodePolicy, table: str = DEFAULT_TABLE) -> str:
    """The `nft -f` text for one node: replaces `table inet <table>` as a whole, atomically."""
    return render_policy_table(plan_policy_table(model, table))


def delete_table_text(table: str = DEFAULT_TABLE) -> str:
    """Removes the table if it exists (idempotent): for `down`."""
    return f"table {FAMILY} {table} {{\n}}\ndelete table {FAMILY} {table}\n"


__all__ = [
    "DEFAULT_TABLE",
    "AddressSet",
    "ChainRule",
    "PodChain",
    "PolicyTable",
    "delete_table_text",
    "plan_policy_table",
    "render_node_policies",
    "render_policy_table",
]
