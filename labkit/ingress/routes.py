"""The proxy's routing table, from the served Ingresses and HTTPRoutes and the Services' endpoints. Pure.

Each frontend (a port) gets an ordered list of routes; HAProxy takes the first that matches, so the
order is the precedence the APIs define: a host named exactly before a wildcard host before any
host; within a host, an Exact path before a Prefix, a longer prefix before a shorter one, more
header matches before fewer. Once a request's host has matched a host some rule names, only that
host's routes apply: a path none of them matches gets the default backend (404), as
ingress-nginx's server blocks do, never a wildcard host's route.

Prefix matching is element-wise, as networking/v1 defines it: `/foo` matches `/foo`, `/foo/` and
`/foo/bar`, not `/foobar`; a trailing `/` in the prefix is ignored. ImplementationSpecific is
Prefix here. Backends are the Service port's ready endpoints, pod addresses directly (as
ingress-nginx routes); an HTTPRoute's backendRefs split by weight, each ref's share evenly over its
endpoints. No endpoints (or only weight 0): 503. No route: 404, or the default backend of the
first (by namespace/name) Ingress that sets one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from labkit.k8s import edge
from labkit.k8s.load import Workloads

MAX_WEIGHT = 256  # HAProxy's server weights are 0-256


@dataclass(frozen=True)
class Server:
    name: str
    ip: str
    port: int
    weight: int
    service: str  # "ns/name:port"


@dataclass(frozen=True)
class Backend:
    name: str
    source: str  # what asked for it, for the config's comments and status
    servers: tuple[Server, ...]


@dataclass(frozen=True)
class Route:
    host: str | None  # exact name, "*.suffix", or None: any host
    path_type: str  # Exact | Prefix | RegularExpression
    path: str
    headers: tuple[tuple[str, str, str], ...] = ()  # (type, name, value)
    method: str | None = None
    backend: str = ""
    source: str = ""

    def precedence(self) -> tuple:
        host_rank = 2 if self.host is None else (1 if self.host.startswith("*.") else 0)
        path_rank = {"Exact": 0, "RegularExpression": 1, "Prefix": 2}[self.path_type]
        return (host_rank, -len(self.host or ""), self.host or "", path_rank, -len(self.path),
                -len(self.headers), self.method is None)


@dataclass(frozen=True)
class Frontend:
    name: str
    port: int
    protocol: str
    routes: tuple[Route, ...]
    hosts: tuple[str, ...]  # hosts some route names: a request for one never falls through to others
    certs: tuple[tuple[str, tuple[str, ...]], ...] = ()  # HTTPS: (secret "ns/name", SNI hosts) in order


@dataclass(frozen=True)
class ProxyConfig:
    frontends: tuple[Frontend, ...]
    backends: tuple[Backend, ...]
    default_backend: str | None  # None: 404
    secrets: tuple[str, ...]  # "ns/name" of the TLS Secrets the proxy serves
    status: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- endpoints


def _endpoints(views: Sequence[Any], namespace: str, name: str, port: int | str) -> list[tuple[str, int, str]]:
    """(ip, port, pod) of the ready endpoints of Service port `port` (number or name)."""
    view = next((v for v in views if v.namespace == namespace and v.name == name), None)
    if view is None:
        return []
    for p in view.ports:
        if p.protocol == "TCP" and (p.port == port or (p.name is not None and p.name == port)):
            return [(e.ip, e.port, e.pod) for e in p.endpoints]
    return []


def weighted_servers(refs: Iterable[tuple[str, str, int | str, int]], views: Sequence[Any]) -> tuple[Server, ...]:
    """Servers for weighted Service refs (namespace, name, port, weight): each ref's weight shared
    evenly by its endpoints, scaled to HAProxy's 0-256 (a non-zero share never rounds to 0)."""
    shares = []
    total = sum(max(0, w) for _, _, _, w in refs) if refs else 0
    for namespace, name, port, weight in refs:
        eps = _endpoints(views, namespace, name, port)
        for ip, target, pod in eps:
            share = (weight / total / len(eps)) if total else 0.0
            shares.append((f"{namespace}/{name}:{port}", ip, target, pod, share))
    top = max((s[-1] for s in shares), default=0.0)
    servers, seen = [], set()
    for service, ip, target, pod, share in shares:
        weight = 0 if share == 0 or top == 0 else max(1, round(MAX_WEIGHT * share / top))
        base = re.sub(r"[^A-Za-z0-9_.-]", "-", pod.split("/")[-1]) or "ep"
        label, n = base, 1
        while label in seen:
            n += 1
            label = f"{base}-{n}"
        seen.add(label)
        servers.append(Server(label, ip, target, weight, service))
    return tuple(servers)


# ---------------------------------------------------------------- Gateway API hostnames


def _covers(wildcard: str, host: str) -> bool:
    return wildcard.startswith("*.") and host.endswith(wildcard[1:]) and len(host) > len(wildcard) - 1


def route_hosts(listener_host: str | None, route_hosts: Sequence[str]) -> list[str | None]:
    """The hostnames a route serves on a listener (the API's intersection); empty: it does not attach."""
    if not route_hosts:
        return [listener_host]
    if listener_host is None:
        return list(route_hosts)
    found: list[str | None] = []
    for host in route_hosts:
        if host == listener_host or _covers(listener_host, host):
            found.append(host)
        elif _covers(host, listener_host):
            found.append(listener_host)
    return list(dict.fromkeys(found))


def _attaches(route: Any, gw: Any, listener: Any) -> bool:
    allowed = listener.allowedRoutes.namespaces.from_
    if allowed == "Same" and route.namespace != gw.namespace:
        return False
    for ref in route.spec.parentRefs:
        if (ref.namespace or route.namespace, ref.name) != (gw.namespace, gw.name):
            continue
        if ref.sectionName not in (None, listener.name) or ref.port not in (None, listener.port):
            continue
        return True
    return False


# ---------------------------------------------------------------- the whole table


def proxy_config(workloads: Workloads, views: Sequence[Any]) -> ProxyConfig:
    """The routes, backends and certificates of labkit's proxy, from what it serves and the endpoints."""
    ingresses, gateways, skipped = edge.served(workloads)
    ingresses = sorted(ingresses, key=lambda i: i.key)
    backends: dict[tuple, Backend] = {}

    def backend(refs: tuple[tuple[str, str, int | str, int], ...], source: str) -> str:
        if refs not in backends:
            backends[refs] = Backend(f"be-{len(backends) + 1}", source, weighted_servers(refs, views))
        return backends[refs].name

    by_port: dict[int, list[Route]] = {}
    status: dict[str, Any] = {"ingresses": [], "routes": [], "skipped": skipped}
    http_routes: list[Route] = []
    default_backend = None
    for ing in ingresses:
        served_at = []
        if ing.spec.defaultBackend is not None and default_backend is None:
            svc = ing.spec.defaultBackend.service
            assert svc is not None
            default_backend = backend(((ing.namespace, svc.name, svc.port.ref, 1),), f"Ingress {ing.key} default")
        for rule in ing.spec.rules:
            for path in rule.http.paths if rule.http else ():
                svc = path.backend.service
                assert svc is not None
                value = path.path or "/"
                name = backend(((ing.namespace, svc.name, svc.port.ref, 1),), f"Ingress {ing.key}")
                http_routes.append(Route(rule.host, path.match, value, backend=name, source=f"Ingress {ing.key}"))
                served_at.append(f"{rule.host or '*'}{value} ({path.pathType}) -> {svc.name}:{svc.port.ref}")
        status["ingresses"].append({"name": ing.key, "rules": served_at})
    by_port[edge.HTTP_PORT] = list(http_routes)
    certs: dict[int, list[tuple[str, tuple[str, ...]]]] = {}
    for ing in ingresses:
        for tls in ing.spec.tls:
            if tls.secretName:
                certs.setdefault(edge.HTTPS_PORT, []).append((f"{ing.namespace}/{tls.secretName}", tls.hosts))
    if edge.HTTPS_PORT in certs:
        by_port[edge.HTTPS_PORT] = list(http_routes)
    for gw in sorted(gateways, key=lambda g: g.key):
        for listener in gw.spec.listeners:
            if listener.tls:
                for ref in listener.tls.certificateRefs:
                    hosts = (listener.hostname,) if listener.hostname else ()
                    certs.setdefault(listener.port, []).append((f"{ref.namespace or gw.namespace}/{ref.name}", hosts))
            routes = by_port.setdefault(listener.port, [])
            for hr in sorted(workloads.http_routes, key=lambda r: r.key):
                if not _attaches(hr, gw, listener):
                    continue
                hosts = route_hosts(listener.hostname, hr.spec.hostnames)
                entry = {"name": hr.key, "gateway": gw.key, "listener": listener.name, "hosts": hosts, "rules": []}
                status["routes"].append(entry)
                for rule in hr.spec.rules:
                    refs = tuple((ref.namespace or hr.namespace, ref.name, ref.port or 0, ref.weight)
                                 for ref in rule.backendRefs)
                    name = backend(refs, f"HTTPRoute {hr.key}")
                    entry["rules"].append({"backend": name, "weights": {f"{r[1]}:{r[2]}": r[3] for r in refs}})
                    for match in rule.matches:
                        path_type = {"PathPrefix": "Prefix"}.get(match.path.type, match.path.type)
                        headers = tuple((h.type, h.name.lower(), h.value) for h in match.headers)
                        for host in hosts:
                            routes.append(Route(host, path_type, match.path.value, headers, match.method,
                                                name, f"HTTPRoute {hr.key}"))
    for hr in workloads.http_routes:
        if not any(r["name"] == hr.key for r in status["routes"]):
            skipped.setdefault(hr.key, "attaches to no listener of a Gateway labkit serves (parentRefs, "
                                       "sectionName, port, allowedRoutes, hostnames)")
    frontends = []
    protocols = {f.port: f.protocol for f in edge.frontends(workloads)}
    for port in sorted(by_port):
        routes = tuple(sorted(dict.fromkeys(by_port[port]), key=Route.precedence))
        hosts = tuple(dict.fromkeys(r.host for r in routes if r.host is not None))
        protocol = protocols.get(port, "HTTP")
        frontends.append(Frontend(f"{protocol.lower()}-{port}", port, protocol, routes, hosts,
                                  tuple(certs.get(port, ())) if protocol == "HTTPS" else ()))
    secrets = tuple(dict.fromkeys(s for port in certs for s, _ in certs[port]))
    status["backends"] = [{"name": b.name, "source": b.source,
                           "servers": [f"{s.ip}:{s.port} weight {s.weight}" for s in b.servers],
                           **({} if any(s.weight for s in b.servers) else {"problem": "no endpoints: answers 503"})}
                          for b in backends.values()]
    return ProxyConfig(tuple(frontends), tuple(backends.values()), default_backend, secrets, status)


# ---------------------------------------------------------------- HAProxy's words for it


def quoted(value: str) -> str:
    """A value as one HAProxy config word: double quotes, with `\\`, `"` and `$` escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def condition(route: Route) -> str:
    """The ACL condition of a route: host, path, headers and method, ANDed (a Prefix is two ORed terms)."""
    terms = []
    if route.host is not None and route.host.startswith("*."):
        terms.append("{ var(txn.host) -m reg " + quoted("^[^.]+" + re.escape(route.host[1:]) + "$") + " }")
    elif route.host is not None:
        terms.append("{ var(txn.host) -m str " + quoted(route.host) + " }")
    for kind, name, value in route.headers:
        how = "-m reg" if kind == "RegularExpression" else "-m str"
        terms.append(f"{{ req.hdr({name}) {how} {quoted(value)} }}")
    if route.method:
        terms.append(f"{{ method {route.method} }}")
    head = " ".join(terms)
    if route.path_type == "Exact":
        return f"{head} {{ path -m str {quoted(route.path)} }}".strip()
    if route.path_type == "RegularExpression":
        return f"{head} {{ path -m reg {quoted(route.path)} }}".strip()
    prefix = route.path.rstrip("/")
    if not prefix:  # "/" matches every path
        return head or "TRUE"
    return (f"{head} {{ path -m str {quoted(prefix)} }} || "
            f"{head} {{ path -m beg {quoted(prefix + '/')} }}").strip()


def host_condition(host: str) -> str:
    if host.startswith("*."):
        return "{ var(txn.host) -m reg " + quoted("^[^.]+" + re.escape(host[1:]) + "$") + " }"
    return "{ var(txn.host) -m str " + quoted(host) + " }"
