"""`labkit trace`: one real probe from a node or pod, and its path hop by hop from what the kernel did.

    report = trace(status, "default/client", "web")      # status: labkit.lab.status(name)
    print(render(report, "text"))

In every namespace the probe may cross, a temporary nftables table marks the probe alone
(`meta nftrace set 1`, labkit.trace.nftrace) and `nft monitor` reports each rule that touched
it; labkit's agent sends the probe from the source; `ip route get fibmatch` in each namespace
tells the route that matched for the packet as it was there (after DNAT). The tables and
monitors are gone when `trace` returns (labkit.trace.run). The report speaks in Kubernetes
terms because the rules carry comments naming their Service, endpoint or NetworkPolicy.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping
from typing import Any

from labkit.errors import LabkitError
from labkit.trace import path, run
from labkit.trace.render import FORMATS, render
from labkit.trace.target import PROTOCOLS, Target, endpoint_address, resolve

DEFAULT_TIMEOUT = 1.0

__all__ = ["DEFAULT_TIMEOUT", "FORMATS", "PROTOCOLS", "Target", "render", "resolve", "trace"]


def _route_text(route: Mapping[str, Any] | None) -> str | None:
    if not route:
        return None
    if "error" in route:
        return f"no route: {route['error']}"
    parts = [route.get("type") if route.get("type") not in (None, "unicast") else None, route.get("dst"),
             f"via {route['gateway']}" if route.get("gateway") else None,
             f"dev {route['dev']}" if route.get("dev") else None,
             f"proto {route['protocol']}" if route.get("protocol") else None,
             f"scope {route['scope']}" if route.get("scope") not in (None, "global") else None,
             " ".join(route.get("flags") or []) or None,
             f"table {route['table']}" if route.get("table") not in (None, "main") else None]
    return " ".join(p for p in parts if p)


def _same_endpoint(a: str, b: str) -> bool:
    """`10.244.1.5:80` and `[fd00:10:244:1::5]:80` compared as addresses (any way of writing IPv6)."""
    (ip_a, port_a), (ip_b, port_b) = endpoint_address(a), endpoint_address(b)
    try:
        return port_a == port_b and ipaddress.ip_address(ip_a) == ipaddress.ip_address(ip_b)
    except ValueError:
        return a == b


def _chosen_endpoint(probe: path.Direction, target: Target) -> str | None:
    """"NS/POD IP:PORT" of the endpoint the DNAT rule picked (by its address among the Service's endpoints)."""
    for hop in probe.hops:
        for rule in hop.rules:
            found = path.DNAT.search(rule.rule)
            if found:
                return next((e for e in target.endpoints if _same_endpoint(e.split(" ")[-1], found.group(1))),
                            found.group(1))
    return None


def trace(status: Mapping[str, Any], src: str, dst: str, protocol: str | None = None, port: int | None = None,
          timeout: float = DEFAULT_TIMEOUT, journal: str | None = None, family: int | None = None) -> dict[str, Any]:
    """Send one probe from `src` to `dst` in the running lab whose status is given; its report (JSON-able).
    `family` (4, 6): the address family to probe over where `dst` has both (labkit.trace.target.resolve).
    `journal`: see labkit.trace.run.collect."""
    started = time.perf_counter()
    target = resolve(status, src, dst, protocol, port, family)
    if not 0 < timeout <= 30:
        raise LabkitError(f"timeout {timeout:g}s: give 0 < T <= 30 seconds")
    request = {"host": target.address, "port": target.port or 0, "timeout": timeout}
    marker, answer, monitored = run.collect(target.namespaces, target.source, request, target.protocol,
                                            journal=journal)
    probe, reply = path.build(monitored, target.kinds)
    hops = [h for d in (probe, reply) for h in d.hops if h.route_query]
    routes = run.parallel(lambda i: run.route_get(target.namespaces[hops[int(i)].name], **hops[int(i)].route_query),
                          [str(i) for i in range(len(hops))])
    for i, hop in enumerate(hops):
        hop.route = _route_text(routes[str(i)])
    endpoint = _chosen_endpoint(probe, target)
    dropped = probe.dropped or reply.dropped
    return {
        "lab": status.get("name"), "source": target.source, "destination": target.asked,
        "address": target.address, "family": 6 if ":" in target.address else 4, "port": target.port,
        "protocol": target.protocol,
        "service": target.service, "service_endpoints": list(target.endpoints), "endpoint": endpoint,
        "result": {"open": bool(answer.get("open")), "reason": answer.get("reason")},
        "dropped": {"where": dropped.name, "by": dropped.dropped_by} if dropped else None,
        "probe": [h.as_dict() for h in probe.hops], "reply": [h.as_dict() for h in reply.hops],
        "watched": list(target.namespaces), "marker": {"dscp": marker.dscp, "sport": marker.sport},
        "elapsed": round(time.perf_counter() - started, 4),
    }
