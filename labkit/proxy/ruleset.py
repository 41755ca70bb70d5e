"""A node's service rule set in the shape of kube-proxy's nftables mode. Pure.

One table per node. Packets to a ClusterIP (or to a NodePort on one of the
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
from labkit.proxy.views import ServicePortView, ServiceView

DEFAULT_TABLE = "labkit-proxy"
MASQUERADE_MARK = 0x4000  # kube-proxy's bit: the policy tables leave it alone



@dataclass(frozen=True)
class EndpointChain:
    name: str
    ip: str
    port: int
    protocol: str  # "tcp" | "udp"
    affinity_set: str | None = None
    comment: str = ""  # on the DNAT rule: "endpoint NS/POD IP:PORT" (labkit trace reports it)


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
    """What the template renders: chains and map elements, in a stable order."""

    table: str
    pod_cidr: str
    node_ips: tuple[str, ...]
    mark: int
    chains: tuple[ServiceChain, ...] = ()
    no_endpoint_ips: tuple[tuple[str, str, int], ...] = ()
    no_endpoint_node_ports: tuple[tuple[str, int], ...] = ()


def _chain_id(*parts: str) -> str:
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    return base64.b32encode(digest).decode()[:8]


def _comment(text: str) -> str:
    # Names are validated DNS labels/subdomains (no quotes); nft caps comments at 128 bytes.
    return text if len(text) <= 120 else text[:117] + "..."


def _port_label(port: ServicePortView) -> str:
    return port.name or f"p{port.port}"


def plan_node_ruleset(
    services: Sequence[ServiceView],
    *,
    pod_cidr: str,
    node_ips: Sequence[str] = (),
    table: str = DEFAULT_TABLE,
    node_name: str | None = None,
) -> NodeRuleset:
    """Decide every chain, map element and set for one node (the data behind the text).

    `node_name` tells which endpoints are this node's own, for externalTrafficPolicy: Local."""
    # Every value that reaches the nft text is checked here, so nothing but an address lands in it.
    ipaddress.IPv4Network(pod_cidr)
    for ip in node_ips:
        ipaddress.IPv4Address(ip)
    chains: list[ServiceChain] = []
    no_ep_ips: list[tuple[str, str, int]] = []
    no_ep_nodeports: list[tuple[str, int]] = []
    for svc in sorted(services, key=lambda s: (s.namespace, s.name)):
        if svc.type == "ExternalName" or svc.headless or svc.cluster_ip is None:
            continue
        for port in svc.ports:
            proto = port.protocol.lower()
            ident = f"{svc.namespace}/{svc.name}/{proto}/{_port_label(port)}"
            external_ips = svc.external_addresses
            for ip in external_ips:
                ipaddress.IPv4Address(ip)
            if not port.endpoints:
                no_ep_ips.append((svc.cluster_ip, proto, port.port))
                no_ep_ips.extend((ip, proto, port.port) for ip in external_ips)
                if port.node_port is not None:
                    no_ep_nodeports.append((proto, port.node_port))
                continue
            affinity = svc.session_affinity == "ClientIP"
            ipaddress.IPv4Address(svc.cluster_ip)
            endpoints, local = [], []
            for ep in port.endpoints:
                ipaddress.IPv4Address(ep.ip)
                ep_ident = f"{ident}__{ep.ip}/{ep.port}"
                ep_id = _chain_id(ep_ident)
                endpoints.append(EndpointChain(
                    name=f"endpoint-{ep_id}-{ep_ident}",
                    ip=ep.ip,
                    port=ep.port,
                    protocol=proto,
                    affinity_set=f"affinity-{ep_id}-{ep_ident}" if affinity else None,
                    comment=_comment(f"endpoint {ep.pod} {ep.ip}:{ep.port}"),
                ))
                if node_name is not None and ep.node == node_name:
                    local.append(endpoints[-1])
            chain_id = _chain_id(ident)
            external = port.node_port is not None or bool(external_ips)
            ranges = svc.source_ranges if svc.load_balancer_ip else ()
            for cidr in ranges:
                ipaddress.IPv4Network(cidr)
            if port.node_port is not None:
                external_comment = f"nodePort {port.node_port}/{proto} of service {svc.key}:{port.port}"
            else:
                external_comment = f"external address of service {svc.key}:{port.port}/{proto}"
            chains.append(ServiceChain(
                name=f"service-{chain_id}-{ident}",
                service=svc.key,
                protocol=proto,
                cluster_ip=svc.cluster_ip,
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
        pod_cidr=pod_cidr,
        node_ips=tuple(node_ips),
        mark=MASQUERADE_MARK,
        chains=tuple(chains),
        no_endpoint_ips=tuple(no_ep_ips),
        no_endpoint_node_ports=tuple(no_ep_nodeports),
    )


def render_ruleset(plan: NodeRuleset) -> str:
    return templating.render("kube-proxy.nft.j2", trim=True, plan=plan)


def render_node_ruleset(
    services: Sequence[ServiceView],
    *,
    pod_cidr: str,
    node_ips: Sequence[str] = (),
    table: str = DEFAULT_TABLE,
    node_name: str | None = None,
) -> str:
    """The `nft -f` text for one node: replaces `table ip <table>` as a whole, atomically.

    `pod_cidr` is the cluster's pod network (clients outside it are masqueraded);
    `node_ips`, when given, limits NodePorts to those addresses (kube-proxy's
    --nodeport-addresses), otherwise any local address but loopback serves them;
    `node_name` picks the local endpoints of externalTrafficPolicy: Local services.
    """
    return render_ruleset(plan_node_ruleset(services, pod_cidr=pod_cidr, node_ips=node_ips, table=table,
                                            node_name=node_name))


def delete_table_text(table: str = DEFAULT_TABLE) -> str:
    """Removes the table if it exists (idempotent): for `down`."""
    return f"table ip {table} {{\n}}\ndelete table ip {table}\n"
