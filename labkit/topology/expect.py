"""The `expect:` model of a topology: typed checks, parsed once when the plan is loaded.

    expect:
      - {from: default/client, to: web.default.svc.cluster.local:80, result: open}
      - {from: default/client, to: db.prod:5432, protocol: udp, result: closed}
      - {from: default/client, resolve: web, result: 10.96.0.0/16}
      - {from: default/client, to: web:80, result: open, within: 10}

`from` is a pod (`NS/POD`) or a node (`NODE`); `to` is `NS/POD:PORT`, `NODE:PORT`,
`IP:PORT` or a DNS name with a port; `resolve` is a DNS name whose answer must be
in `result` (a CIDR, an IP or NXDOMAIN). `within` (seconds, 0-600) lets a check take that long
to become true: `labkit verify` probes it again until it holds or the time is up (after an
`apply`, a Deployment's pods take a moment). Pure: `labkit.verify` runs the checks.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from labkit.errors import InputError, Problem

KEYS = ("from", "to", "resolve", "result", "protocol", "within")
MAX_WITHIN = 600.0  # seconds: a check that needs longer is waiting for something else
EXAMPLE = "{from: default/client, to: web:80, result: open}"
TARGET_FORMS = "e.g. web.default:80, default/web-0:8080, cp:30080 or 10.96.0.10:53"

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_NODE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")
_POD_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


# ---------------------------------------------------------------- targets and sources


@dataclass(frozen=True)
class Target:
    """Where a connection check goes. kind: pod (namespace/pod), ip, or name (DNS name or node)."""

    kind: Literal["pod", "ip", "name"]
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


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


def parse_target(text: str) -> Target:
    """`ns/pod:port`, `NODE:port`, `IP:port` or `dns.name:port` -> Target; ValueError says what is wrong."""
    if not isinstance(text, str):
        raise ValueError(f"expected TARGET:PORT as a string, got {text!r}; {TARGET_FORMS}")
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        raise ValueError(f"{text!r} has no port; write TARGET:PORT, {TARGET_FORMS}")
    if not host:
        raise ValueError(f"{text!r} has no host before the port; write TARGET:PORT, {TARGET_FORMS}")
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise ValueError(f"port {port!r} in {text!r} is not a number 1-65535")
    if ":" in host or "[" in host:
        raise ValueError(f"{text!r}: IPv6 targets are not supported; {TARGET_FORMS}")
    if "/" in host:
        return Target("pod", _check_pod(host), int(port))
    if _IPV4.match(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in {text!r} is not an IPv4 address") from None
        return Target("ip", host, int(port))
    return Target("name", _check_dns_name(host, "host"), int(port))


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


class Expect(BaseModel):
    """One `expect:` entry: a connection check (`to`) or a DNS check (`resolve`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(alias="from")
    to: Target | None = None
    resolve: str | None = None
    protocol: Literal["tcp", "udp"] | None = None
    result: str
    within: float = 0.0

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
    def _to(cls, value: Any) -> Target | None:
        if value is None or isinstance(value, Target):
            return value
        try:
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
        if self.to is not None:
            if self.result not in ("open", "closed"):
                raise _field_fail("result", f"{self.result!r} is not valid for a 'to' check; valid: open, closed")
            return self
        if self.protocol is not None:
            raise _field_fail("protocol", "only a 'to' check has a protocol; 'resolve' asks the cluster DNS")
        canonical = _resolve_result(self.result)
        if canonical != self.result:
            object.__setattr__(self, "result", canonical)
        return self

    # ---- derived

    @property
    def kind(self) -> Literal["connect", "resolve"]:
        return "connect" if self.to is not None else "resolve"

    @property
    def proto(self) -> str:
        return self.protocol or "tcp"

    @property
    def destination(self) -> str:
        """The matrix column: the target as written (with /udp), or `resolve NAME`."""
        if self.to is not None:
            return f"{self.to}/udp" if self.proto == "udp" else str(self.to)
        return f"resolve {self.resolve}"

    def describe(self) -> str:
        if self.to is not None:
            return f"{self.source} -> {self.destination}"
        return f"{self.source} resolve {self.resolve}"


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
            message = f"{err.get('input')!r} is not valid; valid: tcp, udp"
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
