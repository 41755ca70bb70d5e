"""The `expect:` model of a topology: typed checks, parsed once when the plan is loaded.

    expect:
      - {from: default/client, to: web.default.svc.cluster.local:80, result: open}
      - {from: default/client, to: db.prod:5432, protocol: udp, result: closed}
      - {from: default/client, resolve: web, result: 10.96.0.0/16}
      - {from: default/client, to: web:80, result: open, within: 10}
      - {from: ext, to: w1:32080, http: {host: shop.example.test, path: /b}, result: 200 app-b}

      - {from: default/client, to: "[fd00:10:96::a]:53", protocol: udp, result: open}
      - {from: default/client, to: web:80, family: 6, result: open}
      - {from: default/client, to: fd00:10:244:1::5, protocol: icmp, result: open}
      - {from: default/client, resolve: web, result: fd00:10:96::/112}

`from` is a pod (`NS/POD`) or a node (`NODE`); `to` is `NS/POD:PORT`, `NODE:PORT`,
`IP:PORT` (an IPv6 address in brackets: `[fd00::1]:80`) or a DNS name with a port;
with `protocol: icmp` it is a ping (an ICMP or ICMPv6 echo) and names no port: `NS/POD`,
`NODE`, an address (`fd00::1` bare) or a DNS name. `resolve` is a DNS name whose answer must be
in `result` (a CIDR, an IP or NXDOMAIN). `family` (4 or 6) says which address family a check
goes over where a target has both: a pod's address of that family, a node's mgmt address of
it, a name's A (4) or AAAA (6) records; without it a pod is reached at its primary address,
a node at its mgmt IPv4 address (IPv6 when it has none), a name at the addresses of the lab's
families in the cluster's order, and a `resolve` asks for the records of its result's family
(a CIDR or an IP) or else of the cluster's preferred family. `within` (seconds, 0-600) lets a check take that long
to become true: `labkit verify` probes it again until it holds or the time is up (after an
`apply`, a Deployment's pods take a moment). `http` makes a `to` check one HTTP request (`host`:
the Host header and TLS SNI name, `path`, `scheme` http|https, `method`, `headers`) whose `result`
is the status code, optionally followed by text the body must hold. Pure: `labkit.verify` runs
the checks.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)
from pydantic_core import PydanticCustomError

from labkit.errors import InputError, Problem
from labkit.families import Family, family_of, host_port, is_ip

KEYS = ("from", "to", "resolve", "result", "protocol", "family", "within", "http")
MAX_WITHIN = 600.0  # seconds: a check that needs longer is waiting for something else
_HTTP_RESULT = re.compile(r"^([1-5][0-9][0-9])(?: (.+))?$", re.S)
EXAMPLE = "{from: default/client, to: web:80, result: open}"
TARGET_FORMS = "e.g. web.default:80, default/web-0:8080, cp:30080, 10.96.0.10:53 or [fd00:10:96::a]:53"
PING_FORMS = "e.g. web.default, default/web-0, cp, 10.244.1.5 or fd00:10:244:1::5"

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_NODE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")
_POD_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


# ---------------------------------------------------------------- targets and sources


@dataclass(frozen=True)
class Target:
    """Where a connection check goes. kind: pod (namespace/pod), ip, or name (DNS name or node);
    `port` None for a ping."""

    kind: Literal["pod", "ip", "name"]
    host: str
    port: int | None

    @property
    def family(self) -> Family | None:
        """An address's own family (4 or 6); None for a pod or a name."""
        return family_of(self.host) if self.kind == "ip" else None

    def __str__(self) -> str:
        return self.host if self.port is None else host_port(self.host, self.port)


def _fail(message: str) -> PydanticCustomError:
    return PydanticCustomError("expect", "{message}", {"message": message})


def _check_dns_name(name: str, what: str) -> str:
    """A DNS name of lowercase labels (a trailing dot allowed); returns it lowercased."""
    text = name.lower()
    bare = text[:-1] if text.endswith(".") else text
    if not bare:
        raise ValueError(f"{what} {name!r} is empty")
    if len(bare) > 253:
        raise ValueError(f"{what} {name!r} is longer than 253 characters")
    for label in bare.split("."):
        if not _LABEL.match(label):
            raise ValueError(f"{what} {name!r} is not a DNS name: label {label!r} must be 1-63 of a-z, 0-9, "
                             "'-', starting and ending with a letter or digit")
    return text


def _check_pod(ref: str) -> str:
    ns, _, pod = ref.partition("/")
    if "/" in pod or not _LABEL.match(ns) or not _POD_NAME.match(pod):
        raise ValueError(f"{ref!r} is not NS/POD: a namespace and a pod name of a-z, 0-9, '-' "
                         "(pod names also '.'), e.g. default/client")
    return ref


def _split(text: str) -> tuple[str, str | None]:
    """(host, port text or None) of `HOST:PORT`, `[V6]:PORT`, `[V6]`, a bare IPv6 address or `HOST`."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"{text!r}: '[' without its ']'; write [IPv6 address]:PORT, e.g. [fd00::1]:80")
        if not host:
            raise ValueError(f"{text!r}: no address in the brackets; write [IPv6 address]:PORT, e.g. [fd00::1]:80")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in {text!r} is not an IPv6 address (brackets hold one, "
                             "e.g. [fd00::1]:80)") from None
        if rest == "":
            return host, None
        if not rest.startswith(":"):
            raise ValueError(f"{text!r}: after ']' comes ':PORT', e.g. [{host}]:80")
        return host, rest[1:]
    if text.count(":") > 1:  # an IPv6 address, bare: a ping target, or a port that needs brackets
        if is_ip(text, 6):
            return text, None
        head, _, tail = text.rpartition(":")
        hint = f"; did you mean [{head}]:{tail}?" if is_ip(head, 6) and tail.isdigit() else ""
        raise ValueError(f"{text!r} is not an IPv6 address or HOST:PORT: an IPv6 address with a port is "
                         f"written in brackets, e.g. [fd00::1]:80{hint}")
    host, sep, port = text.rpartition(":")
    return (host, port) if sep else (text, None)


def _host(host: str, text: str) -> Target:
    """The host part of a target: a pod, an IP (either family) or a DNS name / node; port filled in later."""
    if "/" in host:
        return Target("pod", _check_pod(host), None)
    if ":" in host:
        return Target("ip", str(ipaddress.IPv6Address(host)), None)
    if _IPV4.match(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in {text!r} is not an IPv4 address") from None
        return Target("ip", host, None)
    return Target("name", _check_dns_name(host, "host"), None)


def parse_target(text: str) -> Target:
    """`ns/pod:port`, `NODE:port`, `IP:port` (`[v6]:port`) or `dns.name:port` -> Target; ValueError
    says what is wrong."""
    if not isinstance(text, str):
        raise ValueError(f"expected TARGET:PORT as a string, got {text!r}; {TARGET_FORMS}")
    text = text.strip()
    if text.count(":") > 1 and not text.startswith("[") and is_ip(text, 6):
        head, _, tail = text.rpartition(":")
        maybe = f" (or, if :{tail} is the port, [{head}]:{tail})" if is_ip(head, 6) else ""
        raise ValueError(f"{text!r} is an IPv6 address without a port: write [{text}]:PORT{maybe}, "
                         f"{TARGET_FORMS}")
    host, port = _split(text)
    if port is None:
        raise ValueError(f"{text!r} has no port; write TARGET:PORT, {TARGET_FORMS}")
    if not host:
        raise ValueError(f"{text!r} has no host before the port; write TARGET:PORT, {TARGET_FORMS}")
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise ValueError(f"port {port!r} in {text!r} is not a number 1-65535")
    return replace(_host(host, text), port=int(port))


def parse_ping_target(text: str) -> Target:
    """A ping's target: `ns/pod`, `NODE`, an IP (IPv6 bare or in brackets) or a DNS name, no port."""
    if not isinstance(text, str):
        raise ValueError(f"expected a host to ping as a string, got {text!r}; {PING_FORMS}")
    text = text.strip()
    host, port = _split(text)
    if port is not None:
        raise ValueError(f"{text!r}: a ping (protocol: icmp) has no port; write the host alone, {PING_FORMS}")
    if not host:
        raise ValueError(f"{text!r} names no host; {PING_FORMS}")
    return _host(host, text)


def parse_source(text: str) -> str:
    """`NS/POD` or `NODE`; ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"expected NS/POD or NODE as a string, got {text!r}")
    if "/" in text:
        return _check_pod(text)
    if not _NODE.match(text):
        raise ValueError(f"{text!r} is not a source: write NS/POD (default/client) or NODE (cp)")
    return text


# ---------------------------------------------------------------- the expect model


class HttpCheck(BaseModel):
    """What an `http` check sends: one request, like `curl -H 'Host: HOST' http://TO/PATH`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str | None = None
    path: str = "/"
    scheme: Literal["http", "https"] = "http"
    method: Literal["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"] = "GET"
    headers: dict[str, str] = {}

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        return None if value is None else _check_dns_name(value, "host")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or any(ch.isspace() for ch in value):
            raise _fail(f"path {value!r} is not a request path; valid: /, /api/v1?x=1 (no spaces)")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not re.match(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$", name) or any(ch in text for ch in "\r\n"):
                raise _fail(f"header {name!r}: a token name and a value on one line")
        return value


class Expect(BaseModel):
    """One `expect:` entry: a connection check (`to`) or a DNS check (`resolve`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(alias="from")
    protocol: Literal["tcp", "udp", "icmp"] | None = None  # before `to`: a ping's target has no port
    to: Target | None = None
    resolve: str | None = None
    family: Literal[4, 6] | None = None
    http: HttpCheck | None = None
    result: str
    within: float = 0.0

    @field_validator("family", mode="before")
    @classmethod
    def _family(cls, value: Any) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or value not in (4, 6):
            raise _fail(f"expected 4 or 6 (the address family the check goes over: IPv4 or IPv6), "
                        f"got {_describe(value)}")
        return int(value)

    @field_validator("within", mode="before")
    @classmethod
    def _within(cls, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_WITHIN:
            raise _fail(f"expected seconds as a number 0-{MAX_WITHIN:g} (how long the check may take to "
                        f"become true), got {_describe(value)}")
        return float(value)

    @field_validator("source", mode="before")
    @classmethod
    def _source(cls, value: Any) -> str:
        try:
            return parse_source(value)
        except ValueError as exc:
            raise _fail(str(exc)) from None

    @field_validator("to", mode="before")
    @classmethod
    def _to(cls, value: Any, info: ValidationInfo) -> Target | None:
        if value is None or isinstance(value, Target):
            return value
        try:
            if info.data.get("protocol") == "icmp":
                return parse_ping_target(value)
            return parse_target(value)
        except ValueError as exc:
            raise _fail(str(exc)) from None

    @field_validator("resolve", mode="before")
    @classmethod
    def _resolve(cls, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise _fail(f"expected a DNS name as a string, got {value!r}")
        try:
            return _check_dns_name(value, "name")
        except ValueError as exc:
            raise _fail(str(exc)) from None

    @field_validator("result", mode="before")
    @classmethod
    def _result_text(cls, value: Any) -> str:
        if not isinstance(value, str):
            raise _fail(f"expected open, closed, a CIDR, an IP or NXDOMAIN, got {value!r}")
        return value.strip()

    @model_validator(mode="after")
    def _kind(self) -> Expect:
        if self.to is not None and self.resolve is not None:
            raise _field_fail("resolve", "give either 'to' (a connection check) or 'resolve' (a DNS check), "
                                         "not both")
        if self.to is None and self.resolve is None:
            raise _field_fail("to", f"missing: give 'to' (a connection check) or 'resolve' (a DNS check), "
                                    f"e.g. {EXAMPLE}")
        if self.to is not None and self.family is not None and self.to.family not in (None, self.family):
            raise _field_fail("family", f"{self.family} does not fit {self.to.host}, an IPv{self.to.family} address; "
                                        f"give family {self.to.family}, or leave it out")
        if self.protocol == "icmp" and self.to is None:
            raise _field_fail("protocol", "icmp is a ping: it needs 'to' (a host, no port), e.g. "
                                          "{from: default/client, to: fd00:10:244:1::5, protocol: icmp, result: open}")
        if self.http is not None:
            if self.to is None or self.protocol in ("udp", "icmp"):
                raise _field_fail("http", "an http check needs 'to' (a TCP port): {from: ext, to: w1:32080, "
                                          "http: {host: shop.example.test}, result: 200}")
            if not _HTTP_RESULT.match(self.result):
                raise _field_fail("result", f"{self.result!r} is not valid for an http check; valid: a status "
                                            "code, optionally followed by text the body holds (200, 404, 200 app-a)")
            return self
        if self.to is not None:
            if self.result not in ("open", "closed"):
                raise _field_fail("result", f"{self.result!r} is not valid for a 'to' check; valid: open, closed")
            return self
        if self.protocol is not None:
            raise _field_fail("protocol", "only a 'to' check has a protocol; 'resolve' asks the cluster DNS")
        canonical = _resolve_result(self.result)
        if canonical != self.result:
            object.__setattr__(self, "result", canonical)
        own = None if canonical == "NXDOMAIN" else (6 if ":" in canonical else 4)
        if self.family is not None and own is not None and own != self.family:
            raise _field_fail("family", f"{self.family} does not fit the result {canonical}, an IPv{own} "
                                        f"{'network' if '/' in canonical else 'address'}: a family {self.family} "
                                        f"answer is never in it")
        return self

    # ---- derived

    @property
    def kind(self) -> Literal["connect", "resolve"]:
        return "connect" if self.to is not None else "resolve"

    @property
    def proto(self) -> str:
        return self.protocol or "tcp"

    @property
    def resolve_family(self) -> Literal[4, 6] | None:
        """The records a `resolve` check asks for: `family`, else its result's family (None: NXDOMAIN,
        the lab's preferred family)."""
        if self.family is not None or self.resolve is None or self.result == "NXDOMAIN":
            return self.family
        return 6 if ":" in self.result else 4

    @property
    def destination(self) -> str:
        """The matrix column: the target as written (with /udp; `ping HOST`), or `resolve NAME`;
        ` (IPv6)` after it when `family` asks for one."""
        if self.to is not None and self.http is not None:
            text = f"{self.http.scheme}://{self.http.host or self.to}{self.http.path} @{self.to}"
        elif self.to is not None:
            text = {"udp": f"{self.to}/udp", "icmp": f"ping {self.to}"}.get(self.proto, str(self.to))
        else:
            text = f"resolve {self.resolve}"
        return text + (f" (IPv{self.family})" if self.family is not None else "")

    def describe(self) -> str:
        if self.to is not None:
            return f"{self.source} -> {self.destination}"
        return f"{self.source} {self.destination}"


def _field_fail(field_name: str, message: str) -> PydanticCustomError:
    return PydanticCustomError("expect", "{message}", {"message": message, "field": field_name})


def _resolve_result(text: str) -> str:
    if text.upper() == "NXDOMAIN":
        return "NXDOMAIN"
    valid = "valid: a CIDR (10.96.0.0/16), an IP (10.96.0.10) or NXDOMAIN"
    try:
        if "/" in text:
            return str(ipaddress.ip_network(text, strict=True))
        return str(ipaddress.ip_address(text))
    except ValueError:
        if "/" in text:
            try:
                net = ipaddress.ip_network(text, strict=False)
            except ValueError:
                pass
            else:
                raise _field_fail("result", f"{text!r} has host bits set; did you mean {net}?") from None
        raise _field_fail("result", f"{text!r} is not valid for a 'resolve' check; {valid}") from None


# ---------------------------------------------------------------- validation with positions


@dataclass(frozen=True)
class ExpectProblem:
    """What is wrong with entry `index` (-1: the list itself), at `field` ('' for the entry itself)."""

    index: int
    field: str
    message: str

    @property
    def path(self) -> tuple[str | int, ...]:
        """The path in the topology document: ("expect", index[, field])."""
        if self.index < 0:
            return ("expect",)
        return ("expect", self.index, self.field) if self.field else ("expect", self.index)

    @property
    def dotted(self) -> str:
        if self.index < 0:
            return "expect"
        return f"expect[{self.index}]" + (f".{self.field}" if self.field else "")

    def __str__(self) -> str:
        return f"{self.dotted}: {self.message}"


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def _problems_of(index: int, error: ValidationError) -> list[ExpectProblem]:
    problems = []
    for err in error.errors():
        loc = [str(p) for p in err["loc"]]
        ctx = err.get("ctx") or {}
        name = loc[0] if loc else ctx.get("field", "")
        name = "from" if name == "source" else name
        kind = err["type"]
        if kind == "missing":
            message = {
                "from": "missing; name the source: NS/POD (default/client) or NODE (cp)",
                "result": "missing; valid: open or closed for 'to', a CIDR, an IP or NXDOMAIN for 'resolve'",
            }.get(name, "missing")
        elif kind == "extra_forbidden":
            message = f"unknown key; valid keys: {', '.join(KEYS)}"
        elif kind == "literal_error" and name == "protocol":
            message = f"{err.get('input')!r} is not valid; valid: tcp, udp, icmp (a ping)"
        elif kind == "expect":
            message = ctx.get("message", err["msg"])
        else:
            message = err["msg"]
        problems.append(ExpectProblem(index, name, message))
    return problems


def expect_problems(entries: Any) -> tuple[list[Expect], list[ExpectProblem]]:
    """Validate `expect:` entries: (the valid ones, every problem found). Never raises."""
    if entries is None:
        return [], []
    if not isinstance(entries, list | tuple):
        return [], [ExpectProblem(-1, "", f"expected a list of checks such as [{EXAMPLE}], got "
                                          f"{_describe(entries)}")]
    parsed: list[Expect] = []
    problems: list[ExpectProblem] = []
    for i, entry in enumerate(entries):
        if isinstance(entry, Expect):
            parsed.append(entry)
            continue
        if not isinstance(entry, Mapping):
            problems.append(ExpectProblem(i, "", f"expected a mapping such as {EXAMPLE}, got {_describe(entry)}"))
            continue
        bad_keys = [k for k in entry if not isinstance(k, str)]
        if bad_keys:
            problems.append(ExpectProblem(i, "", f"key {bad_keys[0]!r} is not valid; valid keys: {', '.join(KEYS)}"))
            continue
        try:
            parsed.append(Expect.model_validate(dict(entry)))
        except ValidationError as exc:
            problems.extend(_problems_of(i, exc))
    return parsed, problems


def parse_expects(entries: Any, file: str = "expect",
                  line_of: Callable[[tuple], int | None] | None = None) -> list[Expect]:
    """Validated checks, or InputError with one Problem per fault naming file, line and field.

    `line_of`: the topology loader's `Document.line_of`, called with ("expect", index, field).
    """
    parsed, problems = expect_problems(entries)
    if problems:
        raise InputError([Problem(file, line_of(p.path) if line_of else None, p.dotted, p.message)
                          for p in problems])
    return parsed
