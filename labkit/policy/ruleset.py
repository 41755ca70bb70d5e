"""A node's NetworkPolicy rule set: the compiled model written down as one nftables table. Pure.

Shape (`table inet labkit-policy`, replaced as a whole in one transaction):

- a named interval set of peer addresses per policy rule (`peers-<id>-<ns>/<policy>-<dir><n>`),
  shared by every pod the rule guards, and a set of `address . protocol . port` per
  egress rule with named ports (resolved on each destination pod);
- a chain per isolated pod and direction (`ingress-<id>-<ns>/<pod>`): one line per
  rule that `return`s when the traffic is allowed, `drop` at the end;
- verdict maps `ingress-pods` / `egress-pods` from a local pod's address to its chain;
- base chains: `forward` (pod traffic crossing the node; DNAT to a Service's
  endpoint has happened in prerouting, so pods are judged by their own
  addresses) checks the source pod's egress, then the destination pod's ingress;
  `input` checks a local pod's egress towards the node itself. Replies of
  allowed connections pass first. Nothing hooks `output`: what the node itself
  sends (kubelet probes) is always allowed.
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


@dataclass(frozen=True)
class AddressSet:
    name: str
    comment: str
    elements: tuple[str, ...]


@dataclass(frozen=True)
class ChainRule:
    """One allow line of a pod chain: peer set, inline ports, or a named-port destination set."""

    comment: str
    peer_set: str | None = None
    ports: tuple[str, ...] | None = None
    destination_set: str | None = None


@dataclass(frozen=True)
class PodChain:
    name: str
    pod: str
    ip: str
    direction: Direction
    comment: str
    rules: tuple[ChainRule, ...]
    drop_comment: str = "nothing above allows it"  # on the final drop: the policies, for labkit trace


@dataclass(frozen=True)
class PolicyTable:
    """What the template renders, in a stable order."""

    table: str
    comment: str
    node_ips: tuple[str, ...]
    peer_sets: tuple[AddressSet, ...]
    destination_sets: tuple[AddressSet, ...]
    chains: tuple[PodChain, ...]

    def chains_for(self, direction: Direction) -> tuple[PodChain, ...]:
        return tuple(c for c in self.chains if c.direction == direction)


def _rule_name(ref: RuleRef) -> tuple[str, str]:
    return ref.policy, f"{ref.direction}{ref.index}"


def plan_policy_table(model: NodePolicy, table: str = DEFAULT_TABLE) -> PolicyTable:
    peer_sets: dict[RuleRef, AddressSet] = {}
    destination_sets: dict[RuleRef, AddressSet] = {}
    chains: list[PodChain] = []
    for guard in (*model.ingress, *model.egress):
        rules = []
        for allow in guard.allows:
            rules.extend(_chain_rules(allow, peer_sets, destination_sets))
        chains.append(PodChain(
            name=_ident(guard.direction, guard.pod),
            pod=guard.pod,
            ip=guard.ip,
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
        peer_sets=tuple(peer_sets.values()),
        destination_sets=tuple(destination_sets.values()),
        chains=tuple(chains),
    )


def _chain_rules(
    allow: Allow, peer_sets: dict[RuleRef, AddressSet], destination_sets: dict[RuleRef, AddressSet]
) -> list[ChainRule]:
    ref = allow.rule
    comment = _comment(str(ref))
    if allow.matches_nothing:
        return []
    out = []
    if allow.ports is None or allow.ports:
        peer_set = None
        if allow.peers is not None:
            if ref not in peer_sets:
                peer_sets[ref] = AddressSet(_ident("peers", *_rule_name(ref)), _comment(f"peers of {ref}"),
                                            tuple(str(net) for net in allow.peers))
            peer_set = peer_sets[ref].name
        ports = None if allow.ports is None else tuple(str(p) for p in allow.ports)
        out.append(ChainRule(comment, peer_set=peer_set, ports=ports))
    if allow.destinations:
        named = _comment(f"{ref} named ports")
        if ref not in destination_sets:
            destination_sets[ref] = AddressSet(_ident("named", *_rule_name(ref)), named,
                                               tuple(sorted({str(d) for d in allow.destinations})))
        out.append(ChainRule(named, destination_set=destination_sets[ref].name))
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
