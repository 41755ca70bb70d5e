"""Ingress (networking.k8s.io/v1), IngressClass and `kubernetes.io/tls` Secrets: typed, and checked as
the API server checks them (paths absolute for Exact/Prefix, hosts DNS names with at most a leading
`*.` label, a backend naming a Service port by number or name, one of rules or a default backend).

Which Ingresses the lab's controller serves (`served_ingresses`): those of an IngressClass whose
`spec.controller` is labkit's (CONTROLLER), by `spec.ingressClassName`, the legacy
`kubernetes.io/ingress.class` annotation, or, with neither, the class annotated
`ingressclass.kubernetes.io/is-default-class: "true"`. With no IngressClass in the workloads, labkit
adds one, `haproxy`, marked default (as an ingress controller's install does). An Ingress of another
controller's class is left alone, as in a cluster, and said so in `status`.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import Field, StrictStr, model_validator

from labkit.k8s import names
from labkit.k8s.models import K8sModel, PortNumber, ServicePortName, _fail, _Object

API_VERSION = "networking.k8s.io/v1"
CONTROLLER = "labkit.io/ingress-haproxy"
DEFAULT_CLASS = "haproxy"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
TLS_TYPE = "kubernetes.io/tls"
MAX_SECRET_BYTES = 1024 * 1024  # an object is at most 1.5 MiB in etcd; a certificate chain far less


def host_problem(host: str) -> str | None:
    """An Ingress rule's or TLS host: a DNS subdomain, or `*.` and one (the API's wildcard), never an IP."""
    try:
        ipaddress.ip_address(host)
        return f"{host!r} is an IP address; valid: a DNS name (e.g. foo.example.com or *.example.com)"
    except ValueError:
        pass
    name = host[2:] if host.startswith("*.") else host
    problem = names.dns1123_subdomain(name)
    if problem or "*" in name:
        return (f"{host!r} is not a valid host; valid: a DNS name, lowercase, with at most one leading '*.' "
                "label (e.g. foo.example.com or *.example.com)")
    return None


def path_problem(path: str) -> str | None:
    """What the API server requires of an Exact or Prefix path (and what HAProxy's config can hold)."""
    if not path.startswith("/"):
        return f"{path!r} must be an absolute path, starting with '/'"
    if any(ch.isspace() or ord(ch) < 0x20 or ch in '"\\#{}' for ch in path):
        return f"{path!r} holds a space, a quote, a backslash, '#' or braces; valid: a URL path"
    return None


class ServiceBackendPort(K8sModel):
    name: ServicePortName | None = None
    number: PortNumber | None = None

    @model_validator(mode="after")
    def _one(self) -> ServiceBackendPort:
        if (self.name is None) == (self.number is None):
            raise _fail("exactly one of name and number is required")
        return self

    @property
    def ref(self) -> int | str:
        return self.number if self.number is not None else self.name  # type: ignore[return-value]


class IngressServiceBackend(K8sModel):
    name: Annotated[StrictStr, Field(min_length=1)]
    port: ServiceBackendPort


class IngressBackend(K8sModel):
    service: IngressServiceBackend | None = None
    resource: dict | None = None

    @model_validator(mode="after")
    def _service(self) -> IngressBackend:
        if self.resource is not None:
            raise _fail("resource backends are not served by labkit's controller; valid: service", "resource")
        if self.service is None:
            raise _fail("required field is missing", "service")
        return self


class HTTPIngressPath(K8sModel):
    path: StrictStr | None = None
    pathType: Literal["Exact", "Prefix", "ImplementationSpecific"]
    backend: IngressBackend

    @model_validator(mode="after")
    def _path(self) -> HTTPIngressPath:
        if self.pathType in ("Exact", "Prefix") or self.path is not None:
            problem = path_problem(self.path or "")
            if problem:
                raise _fail(problem, "path")
        return self

    @property
    def match(self) -> str:
        """How labkit's proxy matches it: ImplementationSpecific is Prefix here (as ingress-nginx
        without its regex annotation treats it), with an empty path being '/'."""
        return "Exact" if self.pathType == "Exact" else "Prefix"


class HTTPIngressRuleValue(K8sModel):
    paths: Annotated[tuple[HTTPIngressPath, ...], Field(min_length=1)]


class IngressRule(K8sModel):
    host: StrictStr | None = None
    http: HTTPIngressRuleValue | None = None

    @model_validator(mode="after")
    def _host(self) -> IngressRule:
        if self.host is not None and (problem := host_problem(self.host)):
            raise _fail(problem, "host")
        return self


class IngressTLS(K8sModel):
    hosts: tuple[StrictStr, ...] = ()
    secretName: StrictStr | None = None

    @model_validator(mode="after")
    def _hosts(self) -> IngressTLS:
        for i, host in enumerate(self.hosts):
            if problem := host_problem(host):
                raise _fail(problem, "hosts", i)
        return self


class IngressSpec(K8sModel):
    ingressClassName: StrictStr | None = None
    defaultBackend: IngressBackend | None = None
    tls: tuple[IngressTLS, ...] = ()
    rules: tuple[IngressRule, ...] = ()

    @model_validator(mode="after")
    def _something(self) -> IngressSpec:
        if self.defaultBackend is None and not any(r.http for r in self.rules):
            raise _fail("either defaultBackend or rules with http paths is required", "rules")
        return self


class Ingress(_Object):
    apiVersion: Literal["networking.k8s.io/v1"] = API_VERSION
    kind: Literal["Ingress"] = "Ingress"
    spec: IngressSpec

    def class_name(self) -> str | None:
        """spec.ingressClassName, else the legacy annotation; None: the default class's."""
        return self.spec.ingressClassName or self.metadata.annotations.get(LEGACY_CLASS_ANNOTATION)


class IngressClassSpec(K8sModel):
    _unused = frozenset({"parameters"})

    controller: Annotated[StrictStr, Field(min_length=1)]
    parameters: dict | None = None


class IngressClass(_Object):
    apiVersion: Literal["networking.k8s.io/v1"] = API_VERSION
    kind: Literal["IngressClass"] = "IngressClass"
    spec: IngressClassSpec

    @property
    def is_default(self) -> bool:
        return self.metadata.annotations.get(DEFAULT_CLASS_ANNOTATION) == "true"


class Secret(_Object):
    """A Secret of type kubernetes.io/tls (labkit's proxy serves it); other Secrets are not acted on."""

    _ignored = frozenset({"status", "immutable"})

    apiVersion: Literal["v1"] = "v1"
    kind: Literal["Secret"] = "Secret"
    type: StrictStr = "Opaque"
    data: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    stringData: dict[StrictStr, StrictStr] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _tls(self) -> Secret:
        size = sum(len(v) for v in (*self.data.values(), *self.stringData.values()))
        if size > MAX_SECRET_BYTES:
            raise _fail(f"holds {size} bytes; at most {MAX_SECRET_BYTES} here")
        for key, value in self.data.items():
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise _fail("is not base64 (data values are; stringData takes plain text)", "data", key) from None
        if self.type == TLS_TYPE:
            for key in ("tls.crt", "tls.key"):
                if key not in self.data and key not in self.stringData:
                    raise _fail(f"a {TLS_TYPE} Secret needs {key}", "data")
        return self

    def value(self, key: str) -> str:
        if key in self.stringData:
            return self.stringData[key]
        return base64.b64decode(self.data[key]).decode("utf-8", errors="replace")

    def pem(self) -> str:
        """Certificate chain then key, the single file HAProxy's `crt` takes."""
        crt, key = self.value("tls.crt").strip(), self.value("tls.key").strip()
        return f"{crt}\n{key}\n"


KINDS = {"Ingress": Ingress, "IngressClass": IngressClass, "Secret": Secret}
API_VERSIONS = {"Ingress": API_VERSION, "IngressClass": API_VERSION, "Secret": "v1"}


def builtin_class() -> IngressClass:
    """The IngressClass labkit's controller brings when the workloads name none."""
    return IngressClass.model_validate({
        "metadata": {"name": DEFAULT_CLASS, "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
        "spec": {"controller": CONTROLLER}})


def served_ingresses(ingresses: tuple[Ingress, ...], classes: tuple[IngressClass, ...],
                     ) -> tuple[list[Ingress], dict[str, str]]:
    """The Ingresses labkit's controller serves, and why each other one is not ("ns/name" -> reason)."""
    classes = classes or (builtin_class(),)
    by_name: Mapping[str, IngressClass] = {c.name: c for c in classes}
    defaults = [c for c in classes if c.is_default]
    served, skipped = [], {}
    for ing in ingresses:
        wanted = ing.class_name()
        cls = by_name.get(wanted) if wanted else (defaults[0] if len(defaults) == 1 else None)
        if cls is None:
            skipped[ing.key] = (f"no IngressClass {wanted!r}" if wanted else
                                "no ingressClassName and no single default IngressClass")
        elif cls.spec.controller != CONTROLLER:
            skipped[ing.key] = f"class {cls.name} is controller {cls.spec.controller}'s, not {CONTROLLER}"
        else:
            served.append(ing)
    return served, skipped
