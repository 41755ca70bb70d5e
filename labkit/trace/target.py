"""What `labkit trace LAB SRC DST[:PORT]` means in a running lab: the source's namespace, the
address and port the probe goes to, the Service it names, and the namespaces to watch. Pure:
it reads the lab's status (`labkit status --format json`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from labkit.errors import LabkitError

PROTOCOLS = ("tcp", "udp", "icmp")
_PORT = re.compile(r"^(?P<host>.+):(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class Target:
    """Where the probe goes and what the lab says about it."""

    source: str
    address: str
    port: int | None
    protocol: str
    asked: str
    service: str | None = None  # "ns/name:port/proto"
    endpoints: tuple[str, ...] = ()  # "ns/pod ip:port" of that service port
    namespaces: dict[str, str] = field(default_factory=dict)  # name -> netns path, the source first
    kinds: dict[str, str] = field(default_factory=dict)  # name -> "node" | "pod"


def _netns_path(item: Mapping[str, Any]) -> str | None:
    return item.get("netns_path") or (f"/run/netns/{item['netns']}" if item.get("netns") else None)


def _ip(value: Any) -> str | None:
    return str(value).split("/")[0] if value else None


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def resolve(status: Mapping[str, Any], src: str, dst: str, protocol: str | None = None,
            port: int | None = None) -> Target:
    """SRC: a node or NS/POD; DST[:PORT]: NS/POD, a node, a Service (`web`, `web.ns`,
    `web.ns.svc.<domain>`) or an IPv4 address. A Service's port and protocol default to its first port's."""
    lab = status.get("name", "?")
    if protocol is not None and protocol not in PROTOCOLS:
        raise LabkitError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    pods = {f"{p['namespace']}/{p['name']}": p for p in status.get("pods") or []}
    nodes = {n["name"]: n for n in status.get("nodes") or []}
    if src in pods:
        src_ns = pods[src]["namespace"]
    elif src in nodes:
        src_ns = "default"
    else:
        raise LabkitError(f"lab {lab!r} has no node or pod {src!r} (nodes: {', '.join(nodes) or 'none'}; "
                          f"pods: {', '.join(pods) or 'none'})")
    host, given_port = dst, port
    m = _PORT.match(dst)
    if m:
        host, given_port = m.group("host"), int(m.group("port"))
        if not 0 < given_port < 65536:
            raise LabkitError(f"port {given_port} in {dst!r} is not a port: 1-65535")
    domain = ((status.get("dns") or {}).get("domain") or "cluster.local").strip(".")
    service = None
    if host in pods:
        address = _ip(pods[host].get("ip"))
    elif host in nodes:
        address = _ip(nodes[host].get("mgmt_ipv4"))
    elif _is_ipv4(host):
        address = host
    else:
        service = _service(status, host, src_ns, domain)
        if service is None:
            known = sorted(f"{s['namespace']}/{s['name']}" for s in status.get("services") or [])
            raise LabkitError(f"{host!r} is no pod, node, Service or IPv4 address of lab {lab!r} "
                              f"(services: {', '.join(known) or 'none'})")
        address = service.get("cluster_ip")
        if not address or address == "None":
            raise LabkitError(f"service {service['namespace']}/{service['name']} has no ClusterIP to trace "
                              f"(headless or ExternalName): trace one of its pods")
    if not address:
        raise LabkitError(f"{host!r} has no address in lab {lab!r}")
    svc_port = _service_port(status, address, given_port, protocol, service)
    if protocol is None:
        protocol = str(svc_port["protocol"]).lower() if svc_port else "tcp"
    if given_port is None and svc_port:
        given_port = int(svc_port["port"])
    if protocol != "icmp" and given_port is None:
        raise LabkitError(f"give a port to trace {protocol} to: {dst}:PORT (or --protocol icmp)")
    endpoints: tuple[str, ...] = ()
    svc_name = None
    if svc_port is not None:
        owner = svc_port["service"]
        svc_name = f"{owner['namespace']}/{owner['name']}:{svc_port['port']}/{str(svc_port['protocol']).lower()}"
        by_ip = {_ip(p.get("ip")): k for k, p in pods.items()}
        endpoints = tuple(f"{by_ip.get(e.split(':')[0], '?')} {e}" for e in svc_port.get("endpoints") or [])
    # Every node (not the L2 switches: their packets are bridged, not routed), the source, and
    # the pods the probe can end in: the pod named, the Service's endpoints, the pod with that IP.
    watch: dict[str, str] = {}
    kinds: dict[str, str] = {}
    for name in [src] + [n for n in nodes if n != src]:
        item = pods.get(name) or nodes.get(name)
        if item is None or (name in nodes and nodes[name].get("kind") == "bridge"):
            continue
        path = _netns_path(item)
        if path:
            watch[name], kinds[name] = path, "pod" if name in pods else "node"
    ends = {e.split(" ")[0] for e in endpoints} | {k for k, p in pods.items() if _ip(p.get("ip")) == address}
    for name in sorted(ends):
        if name in pods and name not in watch and _netns_path(pods[name]):
            watch[name], kinds[name] = _netns_path(pods[name]) or "", "pod"
    return Target(source=src, address=address, port=given_port if protocol != "icmp" else None,
                  protocol=protocol, asked=dst, service=svc_name, endpoints=endpoints, namespaces=watch, kinds=kinds)


def _service(status: Mapping[str, Any], host: str, src_ns: str, domain: str) -> dict[str, Any] | None:
    name = host.rstrip(".")
    for suffix in (f".svc.{domain}", ".svc"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    parts = name.split(".")
    if len(parts) == 1:
        ns, svc = src_ns, parts[0]
    elif len(parts) == 2:
        svc, ns = parts
    else:
        return None
    return next((s for s in status.get("services") or [] if s["namespace"] == ns and s["name"] == svc), None)


def _service_port(status: Mapping[str, Any], address: str, port: int | None, protocol: str | None,
                  service: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The Service port the probe hits: by ClusterIP and port, or by NodePort on a node's address."""
    nodes = {_ip(n.get("mgmt_ipv4")) for n in status.get("nodes") or []}
    for s in status.get("services") or []:
        if service is not None and s is not service:
            continue
        for p in s.get("ports") or []:
            proto = str(p.get("protocol", "TCP")).lower()
            if protocol not in (None, proto):
                continue
            if s.get("cluster_ip") == address and (port is None or p.get("port") == port):
                return {**p, "service": s}
            if address in nodes and p.get("node_port") and p.get("node_port") == port:
                return {**p, "service": s}
    return None
