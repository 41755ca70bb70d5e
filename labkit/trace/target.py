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
from labkit.families import family_of, is_ip

PROTOCOLS = ("tcp", "udp", "icmp")
FAMILIES = (4, 6)
_PORT = re.compile(r"^(?P<host>[^:]+):(?P<port>\d{1,5})$")


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


def split_destination(dst: str) -> tuple[str, int | None]:
    """(host, port or None) of `HOST[:PORT]`, `[IPv6]:PORT`, `[IPv6]` or a bare IPv6 address;
    LabkitError naming what is wrong."""
    text = dst.strip()
    port: str | None = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not is_ip(host) or family_of(host) != 6:
            raise LabkitError(f"{dst!r} is not [IPv6 address]:PORT (e.g. [fd00:10:96::a]:53)")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise LabkitError(f"{dst!r}: after ']' comes ':PORT' (e.g. [{host}]:80)")
            port = rest[1:]
    elif text.count(":") > 1:
        if not is_ip(text):
            head, _, tail = text.rpartition(":")
            hint = f"; did you mean [{head}]:{tail}?" if is_ip(head) and tail.isdigit() else ""
            raise LabkitError(f"{dst!r} is not an IPv6 address: with a port, write it in brackets "
                              f"([fd00::1]:80){hint}")
        host = text
    else:
        m = _PORT.match(text)
        host, port = (m.group("host"), m.group("port")) if m else (text, None)
    if port is not None and not 0 < int(port) < 65536:
        raise LabkitError(f"port {int(port)} in {dst!r} is not a port: 1-65535")
    return (str(ipaddress.ip_address(host)) if is_ip(host) else host), (int(port) if port is not None else None)


def _pod_ips(pod: Mapping[str, Any]) -> list[str]:
    """A pod's addresses, primary first (`ips`; `ip` alone in a status from before dual-stack)."""
    ips = [_ip(ip) for ip in pod.get("ips") or [pod.get("ip")] if ip]
    return [ip for ip in ips if ip]


def _node_ips(node: Mapping[str, Any]) -> list[str]:
    return [ip for ip in (_ip(node.get("mgmt_ipv4")), _ip(node.get("mgmt_ipv6"))) if ip]


def _pick(addresses: list[str], family: int | None, what: str) -> str | None:
    """The first address (of `family`, when given); LabkitError when there are some, none of that family."""
    if family is None:
        return addresses[0] if addresses else None
    chosen = next((a for a in addresses if family_of(a) == family), None)
    if chosen is None and addresses:
        raise LabkitError(f"{what} has no IPv{family} address (it has {', '.join(addresses)})")
    return chosen


def resolve(status: Mapping[str, Any], src: str, dst: str, protocol: str | None = None,
            port: int | None = None, family: int | None = None) -> Target:
    """SRC: a node or NS/POD; DST[:PORT]: NS/POD, a node, a Service (`web`, `web.ns`,
    `web.ns.svc.<domain>`) or an address (IPv6 bare, or `[fd00::1]:80`). A Service's port and protocol
    default to its first port's. `family` (4, 6) picks the pod's, node's or Service's address of that
    family; without it, the primary one (a pod's `ip`, a node's mgmt IPv4, a Service's `cluster_ip`)."""
    lab = status.get("name", "?")
    if protocol is not None and protocol not in PROTOCOLS:
        raise LabkitError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    if family is not None and family not in FAMILIES:
        raise LabkitError(f"unknown address family {family!r}; valid: 4, 6")
    pods = {f"{p['namespace']}/{p['name']}": p for p in status.get("pods") or []}
    nodes = {n["name"]: n for n in status.get("nodes") or []}
    if src in pods:
        src_ns = pods[src]["namespace"]
    elif src in nodes:
        src_ns = "default"
    else:
        raise LabkitError(f"lab {lab!r} has no node or pod {src!r} (nodes: {', '.join(nodes) or 'none'}; "
                          f"pods: {', '.join(pods) or 'none'})")
    host, given_port = split_destination(dst)
    given_port = given_port if given_port is not None else port
    domain = ((status.get("dns") or {}).get("domain") or "cluster.local").strip(".")
    service = None
    address: str | None
    if host in pods:
        address = (_ip(pods[host].get("ip")) if family is None
                   else _pick(_pod_ips(pods[host]), family, f"pod {host}"))
    elif host in nodes:
        node_ips = _node_ips(nodes[host])
        address = _pick(node_ips, family, f"node {host}")
    elif is_ip(host):
        address = host
        if family is not None and family_of(host) != family:
            raise LabkitError(f"{host} is an IPv{family_of(host)} address, not IPv{family}")
    else:
        service = _service(status, host, src_ns, domain)
        if service is None:
            known = sorted(f"{s['namespace']}/{s['name']}" for s in status.get("services") or [])
            raise LabkitError(f"{host!r} is no pod, node, Service or IP address of lab {lab!r} "
                              f"(services: {', '.join(known) or 'none'})")
        address = service.get("cluster_ip")
        if not address or address == "None":
            raise LabkitError(f"service {service['namespace']}/{service['name']} has no ClusterIP to trace "
                              f"(headless or ExternalName): trace one of its pods")
        if family is not None:
            address = _pick([str(a) for a in service.get("cluster_ips") or [address]], family,
                            f"service {service['namespace']}/{service['name']}")
    if not address:
        raise LabkitError(f"{host!r} has no address in lab {lab!r}")
    svc_port = _service_port(status, address, given_port, protocol, service)
    if protocol is None:
        protocol = str(svc_port["protocol"]).lower() if svc_port else "tcp"
    if given_port is None and svc_port:
        given_port = int(svc_port["port"])
    if protocol != "icmp" and given_port is None:
        if ":" in host:  # a bare IPv6 address: its port goes after brackets
            head, _, tail = host.rpartition(":")
            maybe = f"; if :{tail} is the port, [{head}]:{tail}" if is_ip(head) and tail.isdigit() else ""
            raise LabkitError(f"give a port to trace {protocol} to: [{host}]:PORT{maybe} (or --protocol icmp)")
        raise LabkitError(f"give a port to trace {protocol} to: {dst}:PORT (or --protocol icmp)")
    endpoints: tuple[str, ...] = ()
    svc_name = None
    if svc_port is not None:
        owner = svc_port["service"]
        svc_name = f"{owner['namespace']}/{owner['name']}:{svc_port['port']}/{str(svc_port['protocol']).lower()}"
        by_ip = {ip: k for k, p in pods.items() for ip in _pod_ips(p)}
        # the endpoints of the probe's family: a dual-stack Service's IPv6 ClusterIP leads to IPv6 ones
        eps = [(e, endpoint_address(e)[0]) for e in svc_port.get("endpoints") or []]
        endpoints = tuple(f"{by_ip.get(ip, '?')} {e}" for e, ip in eps
                          if not is_ip(ip) or family_of(ip) == family_of(address))
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
    ends = {e.split(" ")[0] for e in endpoints} | {k for k, p in pods.items() if address in _pod_ips(p)}
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
    """The Service port the probe hits: by ClusterIP (either family's) and port, or by NodePort on a
    node's address."""
    nodes = {ip for n in status.get("nodes") or [] for ip in _node_ips(n)}
    for s in status.get("services") or []:
        if service is not None and s is not service:
            continue
        cluster_ips = [str(a) for a in s.get("cluster_ips") or [s.get("cluster_ip")] if a]
        for p in s.get("ports") or []:
            proto = str(p.get("protocol", "TCP")).lower()
            if protocol not in (None, proto):
                continue
            if address in cluster_ips and (port is None or p.get("port") == port):
                return {**p, "service": s}
            if address in nodes and p.get("node_port") and p.get("node_port") == port:
                return {**p, "service": s}
    return None


def endpoint_address(text: str) -> tuple[str, str]:
    """(ip, port) of an endpoint as status lists it: `10.244.1.5:80` or `[fd00:10:244:1::5]:80`."""
    text = str(text)
    if text.startswith("["):
        ip, _, rest = text[1:].partition("]")
        return ip, rest.lstrip(":")
    ip, sep, port = text.rpartition(":")
    if not sep:
        return text, ""
    if ":" in ip and not is_ip(ip):  # an IPv6 address with no port
        return text, ""
    return ip, port
