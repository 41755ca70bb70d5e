"""Gateway API (gateway.networking.k8s.io/v1): GatewayClass, Gateway and HTTPRoute, typed and checked.

labkit's controller (CONTROLLER) serves the Gateways of a GatewayClass whose `controllerName` is
its own, on the same HAProxy as Ingresses: each listener (port, HTTP or HTTPS with
`certificateRefs` to kubernetes.io/tls Secrets, hostname) is a frontend on the proxy pods, and
each HTTPRoute attached to it (parentRefs, with sectionName/port) adds its hostnames, matches
(path PathPrefix/Exact/RegularExpression, headers Exact/RegularExpression, method) and weighted
backendRefs. Left out, and an error where a manifest asks for them: TLS passthrough, TCP/UDP/TLS
listeners, filters (listed as not acted on), allowedRoutes namespace selectors.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, StrictInt, StrictStr, model_validator

from labkit.k8s.ingress import host_problem, path_problem
from labkit.k8s.models import DNS1123Label, K8sModel, PortNumber, _fail, _in_range, _Object

API_VERSION = "gateway.networking.k8s.io/v1"
CONTROLLER = "labkit.io/gateway-haproxy"
_HEADER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,255}$")


def _regex_problem(value: str) -> str | None:
    """A regular expression HAProxy's PCRE takes (checked with Python's re, a close subset)."""
    if any(ch.isspace() or ord(ch) < 0x20 for ch in value):
        return f"{value!r}: write whitespace in a regular expression as \\s"
    try:
        re.compile(value)
    except re.error as exc:
        return f"{value!r} is not a regular expression: {exc}"
    return None


class SecretRef(K8sModel):
    group: StrictStr = ""
    kind: Literal["Secret"] = "Secret"
    name: Annotated[StrictStr, Field(min_length=1)]
    namespace: DNS1123Label | None = None


class ListenerTLS(K8sModel):
    _unused = frozenset({"options", "frontendValidation"})

    mode: Literal["Terminate"] = "Terminate"
    certificateRefs: tuple[SecretRef, ...] = ()
    options: dict | None = None
    frontendValidation: dict | None = None


class RouteNamespaces(K8sModel):
    from_: Literal["Same", "All"] = Field("Same", alias="from")


class AllowedRoutes(K8sModel):
    _unused = frozenset({"kinds"})

    namespaces: RouteNamespaces = Field(default_factory=RouteNamespaces)
    kinds: tuple[dict, ...] = ()


class Listener(K8sModel):
    name: DNS1123Label
    hostname: StrictStr | None = None
    port: PortNumber
    protocol: Literal["HTTP", "HTTPS"]
    tls: ListenerTLS | None = None
    allowedRoutes: AllowedRoutes = Field(default_factory=AllowedRoutes)

    @model_validator(mode="after")
    def _check(self) -> Listener:
        if self.hostname is not None and (problem := host_problem(self.hostname)):
            raise _fail(problem, "hostname")
        if self.protocol == "HTTPS" and (self.tls is None or not self.tls.certificateRefs):
            raise _fail("an HTTPS listener needs tls.certificateRefs (mode Terminate)", "tls")
        if self.protocol == "HTTP" and self.tls is not None:
            raise _fail("only valid with protocol HTTPS", "tls")
        return self


class GatewaySpec(K8sModel):
    _unused = frozenset({"addresses", "infrastructure"})

    gatewayClassName: Annotated[StrictStr, Field(min_length=1)]
    listeners: Annotated[tuple[Listener, ...], Field(min_length=1, max_length=64)]
    addresses: tuple[dict, ...] = ()
    infrastructure: dict | None = None

    @model_validator(mode="after")
    def _unique(self) -> GatewaySpec:
        seen: dict[str, int] = {}
        protocols: dict[int, str] = {}
        for i, listener in enumerate(self.listeners):
            if listener.name in seen:
                raise _fail(f"{listener.name!r} is used by two listeners", "listeners", i, "name")
            seen[listener.name] = i
            if protocols.setdefault(listener.port, listener.protocol) != listener.protocol:
                raise _fail(f"port {listener.port} is both HTTP and HTTPS", "listeners", i, "protocol")
        return self


class GatewayClassSpec(K8sModel):
    _unused = frozenset({"parametersRef", "description"})

    controllerName: Annotated[StrictStr, Field(min_length=1)]
    parametersRef: dict | None = None
    description: StrictStr | None = None


class GatewayClass(_Object):
    apiVersion: Literal["gateway.networking.k8s.io/v1"] = API_VERSION
    kind: Literal["GatewayClass"] = "GatewayClass"
    spec: GatewayClassSpec


class Gateway(_Object):
    apiVersion: Literal["gateway.networking.k8s.io/v1"] = API_VERSION
    kind: Literal["Gateway"] = "Gateway"
    spec: GatewaySpec


class ParentReference(K8sModel):
    group: StrictStr = "gateway.networking.k8s.io"
    kind: Literal["Gateway"] = "Gateway"
    namespace: DNS1123Label | None = None
    name: Annotated[StrictStr, Field(min_length=1)]
    sectionName: DNS1123Label | None = None
    port: PortNumber | None = None


class PathMatch(K8sModel):
    type: Literal["Exact", "PathPrefix", "RegularExpression"] = "PathPrefix"
    value: StrictStr = "/"

    @model_validator(mode="after")
    def _value(self) -> PathMatch:
        problem = _regex_problem(self.value) if self.type == "RegularExpression" else path_problem(self.value)
        if problem:
            raise _fail(problem, "value")
        return self


class HeaderMatch(K8sModel):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    name: StrictStr
    value: Annotated[StrictStr, Field(max_length=4096)]

    @model_validator(mode="after")
    def _value(self) -> HeaderMatch:
        if not _HEADER_NAME.match(self.name):
            raise _fail(f"{self.name!r}: labkit's proxy matches header names of letters, digits, '-', '_' and '.'",
                        "name")
        if self.type == "RegularExpression" and (problem := _regex_problem(self.value)):
            raise _fail(problem, "value")
        if any(ord(ch) < 0x20 for ch in self.value):
            raise _fail("a header value is one line of text", "value")
        return self


class RouteMatch(K8sModel):
    _unused = frozenset({"queryParams"})

    path: PathMatch = Field(default_factory=PathMatch)
    headers: Annotated[tuple[HeaderMatch, ...], Field(max_length=16)] = ()
    method: Literal["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"] | None = None
    queryParams: tuple[dict, ...] = ()


class BackendRef(K8sModel):
    _unused = frozenset({"filters"})

    group: StrictStr = ""
    kind: Literal["Service"] = "Service"
    name: Annotated[StrictStr, Field(min_length=1)]
    namespace: DNS1123Label | None = None
    port: PortNumber | None = None
    weight: Annotated[StrictInt, _in_range(0, 1000000, "weights")] = 1
    filters: tuple[dict, ...] = ()

    @model_validator(mode="after")
    def _port(self) -> BackendRef:
        if self.port is None:
            raise _fail("required when the backend is a Service", "port")
        return self


class RouteRule(K8sModel):
    _unused = frozenset({"filters", "timeouts", "retry", "sessionPersistence"})

    name: DNS1123Label | None = None
    matches: Annotated[tuple[RouteMatch, ...], Field(max_length=64)] = (RouteMatch(),)
    backendRefs: tuple[BackendRef, ...] = ()
    filters: tuple[dict, ...] = ()
    timeouts: dict | None = None
    retry: dict | None = None
    sessionPersistence: dict | None = None


class HTTPRouteSpec(K8sModel):
    parentRefs: Annotated[tuple[ParentReference, ...], Field(min_length=1, max_length=32)]
    hostnames: tuple[StrictStr, ...] = ()
    rules: Annotated[tuple[RouteRule, ...], Field(max_length=64)] = (RouteRule(),)

    @model_validator(mode="after")
    def _hosts(self) -> HTTPRouteSpec:
        for i, host in enumerate(self.hostnames):
            if problem := host_problem(host):
                raise _fail(problem, "hostnames", i)
        return self


class HTTPRoute(_Object):
    apiVersion: Literal["gateway.networking.k8s.io/v1"] = API_VERSION
    kind: Literal["HTTPRoute"] = "HTTPRoute"
    spec: HTTPRouteSpec


KINDS = {"GatewayClass": GatewayClass, "Gateway": Gateway, "HTTPRoute": HTTPRoute}
API_VERSIONS = dict.fromkeys(KINDS, API_VERSION)
