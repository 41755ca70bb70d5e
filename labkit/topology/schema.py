"""Typed models of a topology file, as the user writes it (before inheritance).

Keys are kebab-case in YAML (`ipv4-subnet`), snake_case in Python. Unknown keys
are errors, so a typo never silently does nothing.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from labkit.topology import kinds

LAB_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?$")
NODE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")
IFNAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}$")
NODE_KINDS = kinds.names()
RUNTIMES = ("netns", "docker")  # the runtime registry (labkit.runtime) holds exactly these; a test checks it
IMAGE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")  # lenient: no spaces, no shell, no leading '-'


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=_kebab, populate_by_name=True
    )


class Route(Model):
    """A static route: `{dst: 10.0.2.0/24, via: 10.0.0.2}` (dst may be `default`)."""

    dst: str
    via: ipaddress.IPv4Address | None = None
    dev: str | None = None

    @field_validator("dst")
    @classmethod
    def _dst_is_prefix(cls, value: str) -> str:
        if value != "default":
            try:
                ipaddress.IPv4Network(value)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not an IPv4 prefix like 10.0.2.0/24 or 'default' ({exc})") from None
        return value


class NodeSettings(Model):
    """What a node inherits: from defaults, its kind, its group, and itself."""

    kind: str | None = None
    image: str | None = None
    exec: list[str] | None = None
    routes: list[Route] | None = None
    sysctls: dict[str, str | int] | None = None
    # containerlab keys accepted so .clab.yml files load; they have no effect on the netns runtime.
    binds: list[str] | None = None
    env: dict[str, str | int] | None = None
    labels: dict[str, str] | None = None
    cmd: str | None = None
    ports: list[str] | None = None
    startup_delay: int | None = None

    @field_validator("exec")
    @classmethod
    def _exec_not_empty(cls, value: list[str] | None) -> list[str] | None:
        for cmd in value or []:
            if not cmd.strip():
                raise ValueError("an exec command is empty")
        return value

    @field_validator("image")
    @classmethod
    def _image_reference(cls, value: str | None) -> str | None:
        if value is not None and not IMAGE_REF.match(value):
            raise ValueError(f"{value!r} is not an image reference like alpine:3.20 or ghcr.io/org/name:tag")
        return value


class Node(NodeSettings):
    group: str | None = None
    mgmt_ipv4: ipaddress.IPv4Address | None = None


class Endpoint(Model):
    node: str
    interface: str
    ipv4: ipaddress.IPv4Interface | None = None
    mtu: int | None = Field(default=None, ge=68, le=65535)
    mac: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _brief(cls, value: Any) -> Any:
        """containerlab's brief form 'node:interface'; checked here so the error names the item."""
        if isinstance(value, str):
            node, sep, ifname = value.partition(":")
            if not sep or not node or not ifname:
                raise ValueError(f"{value!r} is not 'node:interface' (e.g. 'r1:eth1')")
            return {"node": node, "interface": ifname}
        return value


class Link(Model):
    """A veth link, brief (`endpoints: ["a:eth1", "b:eth1"]`) or extended form."""

    type: Literal["veth"] = "veth"
    endpoints: list[Endpoint] = Field(min_length=2, max_length=2)
    ipv4: list[ipaddress.IPv4Interface] | None = Field(default=None, min_length=2, max_length=2)
    mtu: int | None = Field(default=None, ge=68, le=65535)

    @field_validator("endpoints", mode="before")
    @classmethod
    def _two_endpoints(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        if len(value) != 2:
            raise ValueError(f"a veth link joins exactly 2 endpoints, got {len(value)}; "
                             "use a bridge node to join more")
        return value


class Mgmt(Model):
    ipv4_subnet: ipaddress.IPv4Network = ipaddress.IPv4Network("172.31.0.0/24")
    host_access: bool = False
    network: str | None = None  # containerlab's docker network name; unused here


class CNI(Model):
    backend: str = kinds.DEFAULT_CNI_BACKEND
    mode: str = kinds.DEFAULT_CNI_MODE
    mtu: int | None = Field(default=None, ge=576, le=65535)

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, value: str) -> str:
        if value not in kinds.CNI_MODES:
            valid = " or ".join(repr(m) for m in kinds.CNI_MODES)
            raise ValueError(f"should be {valid} (got {value!r}): ptp routes each pod's veth, "
                             "bridge puts a node's pods on one bridge (cni0)")
        return value

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in kinds.CNI_BACKENDS:
            valid = " or ".join(repr(b) for b in kinds.CNI_BACKENDS)
            raise ValueError(f"should be {valid} (got {value!r})")
        return value


class DNS(Model):
    ip: ipaddress.IPv4Address = ipaddress.IPv4Address("10.96.0.10")
    replicas: int = Field(default=1, ge=1, le=8)
    upstreams: list[ipaddress.IPv4Address] = []
    workers: int | Literal["auto"] = "auto"   # server processes per replica; auto: one per two CPUs

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: Any) -> Any:
        if value == "auto" or (type(value) is int and 1 <= value <= 64):
            return value
        raise ValueError(f"workers is auto (one per two CPUs) or a number from 1 to 64, got {value!r}")


class Cluster(Model):
    domain: str = "cluster.local"
    pod_cidr: ipaddress.IPv4Network = ipaddress.IPv4Network("10.244.0.0/16")
    service_cidr: ipaddress.IPv4Network = ipaddress.IPv4Network("10.96.0.0/16")
    cni: CNI = CNI()
    dns: DNS = DNS()


class TopologyBody(Model):
    defaults: NodeSettings = NodeSettings()
    kinds: dict[str, NodeSettings] = {}
    groups: dict[str, NodeSettings] = {}
    nodes: dict[str, Node] = Field(min_length=1)
    links: list[Link] = []

    @field_validator("nodes", mode="before")
    @classmethod
    def _empty_node_is_default(cls, value: Any) -> Any:
        if isinstance(value, dict) and not value:
            raise ValueError("no nodes defined: give at least one, e.g. 'h1: {kind: linux}'")
        if isinstance(value, dict):
            return {name: {} if node is None else node for name, node in value.items()}
        return value


class Topology(Model):
    name: str
    runtime: Literal[RUNTIMES] = "netns"
    prefix: str | None = None  # containerlab's container prefix; labkit always uses lk-<name>
    mgmt: Mgmt | None = None
    cluster: Cluster | None = None
    topology: TopologyBody
    workloads: list[str | dict[str, Any]] = []
    expect: list[dict[str, Any]] = []

    @field_validator("name")
    @classmethod
    def _lab_name(cls, value: str) -> str:
        if not LAB_NAME.match(value):
            raise ValueError(
                f"{value!r} is not a lab name: use 1-12 lowercase letters, digits or '-', "
                "starting and ending with a letter or digit"
            )
        return value
