"""A node's service rule set in the shape of kube-proxy's nftables mode. Pure.

One table per node and address family, as kube-proxy has it (its dual-stack mode runs a proxier
per family, with tables `ip kube-proxy` and `ip6 kube-proxy`): `table ip labkit-proxy` for IPv4,
`table ip6 labkit-proxy` for IPv6, the same chains in each. A family's table holds the Services
with a ClusterIP of that family (a SingleStack IPv4 Service's NodePort is not served on the node's
IPv6 address), their endpoints of that family, the node's addresses of that family for NodePorts,
and the externalIPs, LoadBalancer addresses and loadBalancerSourceRanges of that family. An
IPv4-only cluster gets exactly the one IPv4 table it always had. Packets to a ClusterIP (or to a NodePort on one of the
node's own addresses) are looked up in a verdict map keyed on
`daddr . proto . port` (`proto . port` for NodePorts) and sent to a chain per
service port, which picks an endpoint chain with `numgen random`; the endpoint
chain DNATs. Traffic that must be masqueraded (a pod reaching itself, clients
from outside the pod network, all NodePort traffic) is marked on the way in and
masqueraded in postrouting. Service ports without endpoints are rejected in a
filter chain before NAT, so clients fail at once instead of timing out.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from labkit import templating
from labkit.families import family_of, host_port, parse_cidrs, pick
from labkit.proxy.views import ServicePortView, ServiceView

DEFAULT_TABLE = "labkit-proxy"
MASQUERADE_MARK = 0x4000  # kube-proxy's bit: the policy tables leave it alone
NFT_FAMILY = {4: "ip", 6: "ip6"}


@dataclass(frozen=True)
class EndpointChain:
    name: str
    ip: str
    port: int
    protocol: str  # "tcp" | "udp"
    affinity_set: str | None = None
    comment: str = ""  # on the DNAT rule: "endpoint NS/POD IP:PORT" (labkit trace reports it)

    @property
    def target(self) -> str:
        """What `dnat to` takes: "ip:port", "[ip6]:port"."""
        return host_port(self.ip, self.port)


@dataclass(frozen=True)
class ServiceChain:
    """The chain for one port of one service, and what leads to it."""

    name: str
    service: str  # "ns/name"
    protocol: str
    cluster_ip: str | None
    port: int
    node_port: int | None
    external_chain: str | None
    endpoints: tuple[EndpointChain, ...] = ()
    affinity_timeout: int | None = None
    # externalTrafficPolicy: Local - outside clients get only these (this node's), without SNAT
    external_local: bool = False
    local_endpoints: tuple[EndpointChain, ...] = ()
    comment: str = ""  # on the rule that picks the endpoint: "service NS/NAME:PORT/PROTO"
    external_comment: str = ""  # on the external chain's rules: "nodePort N/PROTO of service ..."
    # LoadBalancer addresses and externalIPs: in the service map too, to the external chain (through the
    # firewall chain when loadBalancerSourceRanges limits who may come)
    external_ips: tuple[str, ...] = ()
    firewall_chain: str | None = None
    source_ranges: tuple[str, ...] = ()
    firewall_comment: str = ""


@dataclass(frozen=True)
class NodeRuleset:
    """What the template renders for one address family: chains and map elements, in a stable order."""

    table: str
    pod_cidr: str
    node_ips: tuple[str, ...]
    mark: int
    chains: tuple[ServiceChain, ...] = ()
    no_endpoint_ips: tuple[tuple[str, str, int], ...] = ()
    no_endpoint_node_ports: tuple[tuple[str, int], ...] = ()
    family: int = 4

    @property
    def ip(self) -> str:
        """The nft table family and address match keyword: "ip" or "ip6"."""
        return NFT_FAMILY[self.family]

    @property
    def addr_type(self) -> str:
        return "ipv4_addr" if self.family == 4 else "ipv6_addr"

    @property
    def loopback(self) -> str:
        return "127.0.0.0/8" if self.family == 4 else "::1"

    @property
    def unreachable(self) -> str:
        return "icmp type port-unreachable" if self.family == 4 else "icmpv6 type port-unreachable"


def _chain_id(*parts: str) -> str:
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    return base64.b32encode(digest).decode()[:8]


def _comment(text: str) -> str:
    # Names are validated DNS labels/subdomains (no quotes); nft caps comments at 128 bytes.
    return text if len(text) <= 120 else text[:117] + "..."


def _port_label(port: ServicePortView) -> str:
    return port.name or f"p{port.port}"


def _version(ip: str) -> int:
    """An address's family, checked: ValueError for anything but an address."""
    return ipaddress.ip_address(ip).version


def node_families(pod_cidr: str | Sequence[str]) -> tuple[int, ...]:
    """The address families a node's service tables serve: its cluster's, in the cluster's order."""
    return tuple(n.version for n in parse_cidrs(pod_cidr))


def plan_node_ruleset(
    services: Sequence[ServiceView],
    *,
    pod_cidr: str | Sequence[str],
    node_ips: Sequence[str] = (),
    table: str = DEFAULT_TABLE,
    node_name: str | None = None,
    family: int | None = None,
) -> NodeRuleset:
    """Decide every chain, map element and set of one family's table for one node (the data behind the text).

    `pod_cidr` is the cluster's pod CIDR or CIDRs; `family` (4 or 6) which table, by default the
    first pod CIDR's. `node_ips` may hold both families' addresses: the family's are taken.
    `node_name` tells which endpoints are this node's own, for externalTrafficPolicy: Local."""
    # Every value that reaches the nft text is checked here, so nothing but an address lands in it.
    cidrs = parse_cidrs(pod_cidr)
    family = family or cidrs[0].version
    own_cidr = pick(cidrs, family)
    if own_cidr is None:
        raise ValueError(f"no IPv{family} pod CIDR among {', '.join(map(str, cidrs))}")
    own_node_ips = tuple(ip for ip in node_ips if _version(ip) == family)
    chains: list[ServiceChain] = []
    no_ep_ips: list[tuple[str, str, int]] = []
    no_ep_nodeports: list[tuple[str, int]] = []
    for svc in sorted(services, key=lambda s: (s.namespace, s.name)):
        if svc.type == "ExternalName" or svc.headless or svc.cluster_ip is None:
            continue
        cluster_ip = svc.cluster_ip_of(family)
        if cluster_ip is None:
            continue  # no ClusterIP of this family: the other family's table serves it, NodePorts included
        external_ips = tuple(ip for ip in svc.external_addresses if _version(ip) == family)
        for port in svc.ports:
            proto = port.protocol.lower()
            ident = f"{svc.namespace}/{svc.name}/{proto}/{_port_label(port)}"
            endpoints_here = [ep for ep in port.endpoints if _version(ep.ip) == family]
            if not endpoints_here:
                no_ep_ips.append((cluster_ip, proto, port.port))
                no_ep_ips.extend((ip, proto, port.port) for ip in external_ips)
                if port.node_port is not None:
                    no_ep_nodeports.append((proto, port.node_port))
                continue
            affinity = svc.session_affinity == "ClientIP"
            endpoints, local = [], []
            for ep in endpoints_here:
                # an nft name has no ':': an IPv6 address is written with '.' instead, as kube-proxy does
                ep_ident = f"{ident}__{ep.ip.replace(':', '.')}/{ep.port}"
                ep_id = _chain_id(ep_ident)
                endpoints.append(EndpointChain(
                    name=f"endpoint-{ep_id}-{ep_ident}",
                    ip=ep.ip,
                    port=ep.port,
                    protocol=proto,
                    affinity_set=f"affinity-{ep_id}-{ep_ident}" if affinity else None,
                    comment=_comment(f"endpoint {ep.pod} {host_port(ep.ip, ep.port)}"),
                ))
                if node_name is not None and ep.node == node_name:
                    local.append(endpoints[-1])
            chain_id = _chain_id(ident)
            external = port.node_port is not None or bool(external_ips)
            lb_here = any(_version(ip) == family for ip in svc.load_balancer_ips)
            ranges = _source_ranges(svc, family) if lb_here else ()
            if port.node_port is not None:
                external_comment = f"nodePort {port.node_port}/{proto} of service {svc.key}:{port.port}"
            else:
                external_comment = f"external address of service {svc.key}:{port.port}/{proto}"
            chains.append(ServiceChain(
                name=f"service-{chain_id}-{ident}",
                service=svc.key,
                protocol=proto,
                cluster_ip=cluster_ip,
                port=port.port,
                node_port=port.node_port,
                external_chain=f"external-{chain_id}-{ident}" if external else None,
                endpoints=tuple(endpoints),
                affinity_timeout=svc.affinity_timeout if affinity else None,
                external_local=external and svc.external_traffic_policy == "Local",
                local_endpoints=tuple(local),
                comment=_comment(f"service {svc.key}:{port.port}/{proto}"),
                external_comment=_comment(external_comment) if external else "",
                external_ips=external_ips,
                firewall_chain=f"firewall-{chain_id}-{ident}" if ranges else None,
                source_ranges=ranges,
                firewall_comment=_comment(f"loadBalancerSourceRanges of service {svc.key}: source not allowed"),
            ))
    return NodeRuleset(
        table=table,
        pod_cidr=str(own_cidr),
        node_ips=own_node_ips,
        mark=MASQUERADE_MARK,
        chains=tuple(chains),
        no_endpoint_ips=tuple(no_ep_ips),
        no_endpoint_node_ports=tuple(no_ep_nodeports),
        family=family,
    )


def _source_ranges(svc: ServiceView, family: int) -> tuple[str, ...]:
    """loadBalancerSourceRanges of one family, as kube-proxy filters them: the other family's are
    ignored, and a zero-length prefix (0.0.0.0/0, ::/0) means anyone, like no ranges at all."""
    ranges = tuple(str(ipaddress.ip_network(r, strict=False)) for r in svc.source_ranges)
    own = tuple(r for r in ranges if family_of(r) == family)
    return () if any(r.endswith("/0") for r in own) else own


def plan_node_rulesets(
    services: Sequence[ServiceView],
    *,
    pod_cidr: str | Sequence[str],
    node_ips: Sequence[str] = (),
    table: str = DEFAULT_TABLE,
    node_name: str | None = None,
) -> tuple[NodeRuleset, ...]:
    """One table's plan per family of the cluster (`pod_cidr`'s families), in the cluster's order."""
    return tuple(plan_node_ruleset(services, pod_cidr=pod_cidr, node_ips=node_ips, table=table,
                                   node_name=node_name, family=family) for family in node_families(pod_cidr))


def render_ruleset(plan: NodeRuleset) -> str:
    return templating.render("kube-proxy.nft.j2", trim=True, plan=plan)


def render_node_ruleset(
    services: Sequence[ServiceView],
    *,
    pod_cidr: str | Sequence[str],
    node_ips: Sequence[str] = (),
    table: str = DEFAULT_TABLE,
    node_name: str | None = None,
) -> str:
    """The `nft -f` text for one node: replaces `table ip <table>` (and `table ip6 <table>` on an IPv6 or
    dual-stack cluster) as a whole, atomically: one text, one transaction.

    `pod_cidr` is the cluster's pod network, one CIDR or one per family (clients outside it are
    masqueraded); `node_ips`, when given, limits NodePorts to those addresses (kube-proxy's
    --nodeport-addresses), otherwise any local address but loopback serves them;
    `node_name` picks the local endpoints of externalTrafficPolicy: Local services.
    """
    return "".join(render_ruleset(plan) for plan in plan_node_rulesets(
        services, pod_cidr=pod_cidr, node_ips=node_ips, table=table, node_name=node_name))


def delete_table_text(table: str = DEFAULT_TABLE, families: Sequence[int] = (4,)) -> str:
    """Removes the table of each family if it exists (idempotent): for `down`."""
    return "".join(f"table {NFT_FAMILY[f]} {table} {{\n}}\ndelete table {NFT_FAMILY[f]} {table}\n" for f in families)
