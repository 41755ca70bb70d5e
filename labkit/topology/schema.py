"""Typed models of a topology file, as the user writes it (before inheritance).

Keys are kebab-case in YAML (`ipv4-subnet`), snake_case in Python. Unknown keys
are errors, so a typo never silently does nothing.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from labkit import families
from labkit.topology import impairment, kinds
from labkit.topology.names import CLAB_LAB_NAME, LAB_NAME, NODE_NAME

__all__ = ["CLAB_LAB_NAME", "LAB_NAME", "NODE_NAME"]
IFNAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}$")
NODE_KINDS = kinds.names()
RUNTIMES = ("netns", "docker")  # the runtime registry (labkit.runtime) holds exactly these; a test checks it
IMAGE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")  # lenient: no spaces, no shell, no leading '-'
MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?\s*([kKmMgGtT]i?[bB]?|[bB])?$")
LINK_TYPES = ("veth", "mgmt-net", "host", "macvlan")  # the ones labkit builds
CLAB_LINK_TYPES = LINK_TYPES + ("veth-stitch", "vxlan", "vxlan-stitch", "dummy")  # containerlab's others: refused
MACVLAN_MODES = ("private", "vepa", "bridge", "passthru", "source")


def _kebab(name: str) -> str:
    return name.replace("_", "-")


IP_KINDS = {"address": ipaddress.ip_address, "interface": ipaddress.ip_interface, "network": ipaddress.ip_network}
IP_EXAMPLES = {  # (family, kind) -> what a value looks like
    (4, "address"): "10.0.0.1", (4, "interface"): "10.0.0.1/24", (4, "network"): "10.0.0.0/24",
    (6, "address"): "fd00::1", (6, "interface"): "fd00::1/64", (6, "network"): "fd00::/64",
}


def _other_key(key: str) -> str:
    """The key of the other family: ipv4 <-> ipv6, mgmt-ipv4 <-> mgmt-ipv6."""
    return key.replace("ipv4", "ipv6") if "ipv4" in key else key.replace("ipv6", "ipv4")


def family_checked(value: Any, family: int, kind: str, key: str) -> Any:
    """`value` as given when it is not an address of the other family (the field's own type
    says what else is wrong with it); an IPv4 address under an ipv6 key, or the reverse, is refused
    with a message saying which key takes it."""
    if not isinstance(value, str):
        return value
    try:
        other = ipaddress.ip_interface(value).version
    except ValueError:
        return value
    if other == family:
        return value
    key = _kebab(key)
    what = {"address": "address", "interface": "address", "network": "network"}[kind]
    raise ValueError(f"{value!r} is an IPv{other} {what}; {key} takes IPv{family} ones like "
                     f"{IP_EXAMPLES[(family, kind)]} (IPv{other} goes under {_other_key(key)})")


def _family_validator(family: int, kind: str, *fields: str) -> Any:
    """A before-validator for `fields` refusing an address or network of the other family."""

    def check(cls: Any, value: Any, info: Any) -> Any:
        return family_checked(value, family, kind, info.field_name)

    return field_validator(*fields, mode="before")(check)


def _ip_address(value: Any) -> Any:
    """An IPv4 or IPv6 address, with the reason when it is neither (one message, not one per family)."""
    if not isinstance(value, str):
        return value
    try:
        return ipaddress.IPv6Address(value) if ":" in value else ipaddress.IPv4Address(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IP address like 10.0.0.1 or fd00::1: {exc}") from None


IPAddress = Annotated[ipaddress.IPv4Address | ipaddress.IPv6Address, BeforeValidator(_ip_address)]
# a link end's address under `ipv4:` / `ipv6:` (an endpoint's, or an item of a link's list)
IPv4LinkAddress = Annotated[ipaddress.IPv4Interface, BeforeValidator(lambda v: family_checked(v, 4, "interface",
                                                                                                "ipv4"))]
IPv6LinkAddress = Annotated[ipaddress.IPv6Interface, BeforeValidator(lambda v: family_checked(v, 6, "interface",
                                                                                                "ipv6"))]


class Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=_kebab, populate_by_name=True
    )


class Route(Model):
    """A static route: `{dst: 10.0.2.0/24, via: 10.0.0.2}` or `{dst: fd00:2::/64, via: fd00:1::2}`;
    dst may be `default` (IPv6's when `via` is an IPv6 address; `::/0` says it without one)."""

    dst: str
    via: IPAddress | None = None
    dev: str | None = None

    @field_validator("dst")
    @classmethod
    def _dst_is_prefix(cls, value: str) -> str:
        if value != "default":
            try:  # the family the text looks like, so the reason is that family's
                (ipaddress.IPv6Network if ":" in value else ipaddress.IPv4Network)(value)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not a prefix like 10.0.2.0/24, fd00:2::/64 or 'default' "
                                 f"({exc})") from None
        return value


    @model_validator(mode="after")
    def _one_family(self) -> Route:
        if self.via is not None and self.family != self.via.version:
            raise ValueError(f"route to {self.dst} via {self.via}: the gateway is IPv{self.via.version} and the "
                             f"destination IPv{self.family}; a route's gateway is of its destination's family")
        return self

    @property
    def family(self) -> int:
        """4 or 6: the destination's, or for `default` the gateway's (IPv4 without one)."""
        if self.dst != "default":
            return ipaddress.ip_network(self.dst).version
        return self.via.version if self.via is not None else 4


class Healthcheck(Model):
    """containerlab's (and Docker's) healthcheck; the docker runtime waits for it (seconds)."""

    test: list[str] | None = None
    interval: int | None = Field(default=None, ge=0)
    retries: int | None = Field(default=None, ge=0)
    timeout: int | None = Field(default=None, ge=0)
    start_period: int | None = Field(default=None, ge=0)


STAGE_NAMES = ("create", "create-links", "configure", "healthy", "exit")


class WaitFor(Model):
    node: str
    stage: Literal[STAGE_NAMES] = "create"


class StageExec(Model):
    command: str
    phase: Literal["on-enter", "on-exit"]
    target: Literal["container", "host"] = "container"


class StageExecPhases(Model):
    on_enter: list[str] | None = None
    on_exit: list[str] | None = None


class Stage(Model):
    wait_for: list[WaitFor] | None = None
    exec: list[StageExec] | StageExecPhases | None = None


class Stages(Model):
    """containerlab's node stages; labkit orders node creation by their `wait-for` (docker runtime)."""

    create: Stage | None = None
    create_links: Stage | None = None
    configure: Stage | None = None
    healthy: Stage | None = None
    exit: Stage | None = None


class DNSConfig(Model):
    servers: list[str] | None = None
    search: list[str] | None = None
    options: list[str] | None = None


class NodeSettings(Model):
    """What a node inherits: from defaults, its kind, its group, and itself.

    Every key of containerlab's node schema is here (labkit.topology.clab says which
    runtime acts on which); keys only containerlab's own kinds read are typed loosely.
    """

    kind: str | None = None
    image: str | None = None
    exec: list[str] | None = None
    routes: list[Route] | None = None
    sysctls: dict[str, str | int] | None = None
    # extra /etc/hosts entries, name -> IPv4 or IPv6 address (a client that finds a lab's front door by name)
    hosts: dict[str, IPAddress] | None = None
    # containerlab keys: the docker runtime acts on these (labkit.runtime.docker)
    binds: list[str] | None = None
    env: dict[str, str | int | float | bool] | None = None
    env_files: list[str] | None = None
    labels: dict[str, str | int | float | bool] | None = None
    cmd: str | None = None
    entrypoint: str | None = None
    user: str | int | None = None
    ports: list[str] | None = None
    hostname: str | None = None
    healthcheck: Healthcheck | None = None
    stages: Stages | None = None
    wait_for: list[str] | None = None  # containerlab's older form: nodes this one is created after
    cpu: float | None = Field(default=None, gt=0)
    cpu_set: str | None = None
    memory: str | None = None
    # containerlab keys accepted so its files load as they are; no effect in labkit
    startup_delay: int | None = None
    volumes: list[str] | None = None
    image_pull_policy: str | None = None
    restart_policy: str | None = None
    license: str | None = None
    type: str | None = None
    startup_config: str | None = None
    enforce_startup_config: bool | None = None
    suppress_startup_config: bool | None = None
    auto_remove: bool | None = None
    credentials: dict[str, Any] | None = None
    runtime: str | None = None
    network_mode: str | None = None
    link_apply_mode: str | None = None
    extras: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    dns: DNSConfig | None = None
    certificate: dict[str, Any] | None = None
    components: list[Any] | None = None
    aliases: list[str] | None = None
    shm_size: str | None = None
    cap_add: list[str] | None = None
    privileged: bool | None = None
    cgroupns_mode: str | None = None
    cgroup_parent: str | None = None
    pid_mode: str | None = None
    tmpfs: dict[str, str] | None = None
    security_opts: list[str] | None = None
    devices: list[str] | None = None
    sandbox: str | None = None
    kernel: str | None = None
    publish: list[str] | None = None
    # where a node sits (read from the node itself; `group` also from defaults)
    group: str | None = None
    mgmt_ipv4: ipaddress.IPv4Address | None = None
    mgmt_ipv6: ipaddress.IPv6Address | None = None

    _mgmt_ipv4 = _family_validator(4, "address", "mgmt_ipv4")
    _mgmt_ipv6 = _family_validator(6, "address", "mgmt_ipv6")

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is not None and not MEMORY.match(value):
            raise ValueError(f"{value!r} is not a memory size like 512MB, 1G or 1.5GiB")
        return value

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
    pass


def _blank_is_none(value: Any) -> Any:
    """containerlab writes `""` for "no address here" (`ipv4: ["", 10.0.0.2/24]`)."""
    return None if value == "" else value


class Impaired(Model):
    """Link impairment keys with netlab's `tc` names (labkit.topology.impairment): on a link, for both ends;
    on an endpoint, for that end (over the link's). Values are checked here so errors name their line."""

    delay: float | str | None = None
    jitter: float | str | None = None
    loss: float | str | None = None
    rate: float | str | None = None
    corrupt: float | str | None = None
    duplicate: float | str | None = None
    reorder: float | str | None = None

    @field_validator(*impairment.FIELDS, mode="before")
    @classmethod
    def _impairment(cls, value: Any, info: Any) -> Any:
        return None if value is None else impairment.parse(info.field_name, value)

    def impairment(self) -> impairment.Impairment:
        values = {name: getattr(self, name) or None for name in impairment.FIELDS}
        if values["rate"] is not None:
            values["rate"] = int(values["rate"])
        return impairment.Impairment(**values)


class Endpoint(Impaired):
    node: str
    interface: str
    ipv4: IPv4LinkAddress | None = None
    ipv6: IPv6LinkAddress | None = None
    mtu: int | None = Field(default=None, ge=68, le=65535)
    mac: str | None = None
    vars: dict[str, Any] | None = None

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

    @field_validator("ipv4", "ipv6", mode="before")
    @classmethod
    def _blank_address(cls, value: Any) -> Any:
        return _blank_is_none(value)

    def address(self, family: int) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
        return self.ipv4 if family == 4 else self.ipv6


class Link(Impaired):
    """A link in containerlab's brief form (`endpoints: ["a:eth1", "b:eth1"]`) or its extended
    form (`type:` veth with `endpoints:`; mgmt-net, host or macvlan with `endpoint:` and
    `host-interface:`). Which keys a type needs is checked by the plan, with every other problem."""

    type: str = "veth"
    endpoints: list[Endpoint] | None = None
    endpoint: Endpoint | None = None
    host_interface: str | None = None
    mode: Literal[MACVLAN_MODES] | None = None  # macvlan
    # containerlab's link-level addresses, one per endpoint in order ("" for none)
    ipv4: list[IPv4LinkAddress | None] | None = Field(default=None, min_length=1, max_length=2)
    ipv6: list[IPv6LinkAddress | None] | None = Field(default=None, min_length=1, max_length=2)
    mtu: int | None = Field(default=None, ge=68, le=65535)
    vars: dict[str, Any] | None = None
    labels: dict[str, Any] | None = None
    # vxlan and vxlan-stitch keys: accepted, so such a link gets the one message naming its type
    remote: str | None = None
    vni: int | None = None
    dst_port: int | None = None
    src_port: int | None = None

    @field_validator("ipv4", "ipv6", mode="before")
    @classmethod
    def _blank_addresses(cls, value: Any) -> Any:
        return [_blank_is_none(v) for v in value] if isinstance(value, list) else value

    def addresses(self, family: int) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface | None] | None:
        return self.ipv4 if family == 4 else self.ipv6

    @field_validator("endpoints", mode="before")
    @classmethod
    def _two_endpoints(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        if len(value) != 2:
            raise ValueError(f"a veth link joins exactly 2 endpoints, got {len(value)}; "
                             "use a bridge node to join more")
        return value


DEFAULT_IPV6_SUBNET = "fd00:172:31::/64"  # the mgmt network's IPv6 subnet when none is given (a ULA)


class Mgmt(Model):
    ipv4_subnet: ipaddress.IPv4Network = ipaddress.IPv4Network("172.31.0.0/24")
    host_access: bool = False
    ipv4_range: ipaddress.IPv4Network | None = None  # automatic node addresses come from here
    ipv4_gw: ipaddress.IPv4Address | None = None  # the bridge's (gateway) address; default the first host
    # containerlab keys accepted; no effect (labkit's mgmt bridge lives in the lab's own namespace)
    network: str | None = None
    bridge: str | None = None
    mtu: int | None = Field(default=None, ge=68, le=65535)
    external_access: bool | None = None
    skip_when_unused: bool | None = None
    driver_opts: dict[str, Any] | None = None
    # IPv6 on the mgmt network (also when a cluster has IPv6: then DEFAULT_IPV6_SUBNET unless given)
    ipv6_subnet: ipaddress.IPv6Network | None = None
    ipv6_gw: ipaddress.IPv6Address | None = None
    ipv6_range: ipaddress.IPv6Network | None = None

    _v4_networks = _family_validator(4, "network", "ipv4_subnet", "ipv4_range")
    _v4_gw = _family_validator(4, "address", "ipv4_gw")
    _v6_networks = _family_validator(6, "network", "ipv6_subnet", "ipv6_range")
    _v6_gw = _family_validator(6, "address", "ipv6_gw")

    @field_validator("ipv4_subnet", mode="before")
    @classmethod
    def _auto(cls, value: Any) -> Any:
        return "172.31.0.0/24" if value == "auto" else value

    @field_validator("ipv6_subnet", mode="before")
    @classmethod
    def _auto6(cls, value: Any) -> Any:
        return DEFAULT_IPV6_SUBNET if value == "auto" else value


class Settings(Model):
    """containerlab's top-level `settings:` (its certificate authority); accepted, no effect."""

    certificate_authority: dict[str, Any] | None = None


ASN_MAX = 4294967294  # 4-byte ASNs; 4294967295 is reserved (RFC 7300), 0 too (RFC 7607)


def _asn(value: Any) -> Any:
    if type(value) is int and 1 <= value <= ASN_MAX:
        return value
    raise ValueError(f"an AS number is 1-{ASN_MAX} (private ones: 64512-65534, 4200000000-{ASN_MAX}), "
                     f"got {value!r}")


class BGPPeer(Model):
    """An external BGP peer every k8s-node sessions with over its node IP (Calico's global BGPPeer):
    `address` of a router the user runs, or `node`, a linux node of this lab whose BIRD labkit runs."""

    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None  # its family is the session's
    node: str | None = None
    asn: int

    _check_asn = field_validator("asn", mode="before")(_asn)

    @field_validator("address", mode="before")
    @classmethod
    def _ip(cls, value: Any) -> Any:
        if value is None or isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            return value
        text = str(value)
        what, example, parse = (("an IPv6 address", "fd00::1", ipaddress.IPv6Address) if ":" in text
                                else ("an IPv4 address", "10.0.0.1", ipaddress.IPv4Address))
        try:
            return parse(text)
        except ValueError as exc:
            raise ValueError(f"{text!r} is not {what} like {example}: {exc}") from None

    @model_validator(mode="after")
    def _one_of(self) -> BGPPeer:
        if (self.address is None) == (self.node is None):
            raise ValueError("a peer is {address: IP, asn: N} (a router you run) or {node: NAME, asn: N} "
                             "(a linux node of this lab, whose BIRD labkit runs): give exactly one of address, node")
        return self


class BGP(Model):
    """`cni.bgp` (backend bgp): Calico's BGPConfiguration, in small."""

    asn: int = 64512

    _check_asn = field_validator("asn", mode="before")(_asn)
    mesh: bool | None = None  # iBGP full mesh between the nodes; default: true unless route-reflectors are given
    route_reflectors: list[str] = []
    peers: list[BGPPeer] = []


class CNI(Model):
    backend: str = kinds.DEFAULT_CNI_BACKEND
    mode: str = kinds.DEFAULT_CNI_MODE
    mtu: int | None = Field(default=None, ge=576, le=65535)
    masquerade: bool = True  # pod traffic leaving the cluster takes the node's address (Calico's natOutgoing)
    bgp: BGP | None = None

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
            names = [repr(b) for b in kinds.CNI_BACKENDS]
            valid = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
            raise ValueError(f"should be {valid} (got {value!r})")
        return value


class DNS(Model):
    # The DNS Service's address in its family; the other family's (dual-stack) is the 10th of its service
    # CIDR. Default: the 10th address of each service CIDR (10.96.0.10, fd00:10:96::a), as kubeadm does.
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    replicas: int = Field(default=1, ge=1, le=8)
    upstreams: list[ipaddress.IPv4Address] = []
    workers: int | Literal["auto"] = "auto"   # server processes per replica; auto: one per two CPUs

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: Any) -> Any:
        if value == "auto" or (type(value) is int and 1 <= value <= 64):
            return value
        raise ValueError(f"workers is auto (one per two CPUs) or a number from 1 to 64, got {value!r}")


class IngressSettings(Model):
    replicas: int = Field(default=1, ge=1, le=8)  # proxy pods of the ingress controller (labkit.k8s.edge)
    annotations: dict[str, str] = {}  # on its Service, as a chart's controller.service.annotations (MetalLB's)


Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


class Cluster(Model):
    domain: str = "cluster.local"
    # One CIDR or a dual-stack pair "v4,v6" / "v6,v4" (kube-controller-manager's --cluster-cidr form; also
    # a YAML list); the first is the cluster's preferred family (labkit.families).
    pod_cidrs: Networks = Field(default=(ipaddress.IPv4Network("10.244.0.0/16"),), alias="pod-cidr")
    service_cidrs: Networks = Field(default=(ipaddress.IPv4Network("10.96.0.0/16"),), alias="service-cidr")
    node_mask_v6: int = Field(default=64, ge=48, le=120)  # each node's IPv6 podCIDR (--node-cidr-mask-size-ipv6)
    cni: CNI = CNI()
    dns: DNS = DNS()
    ingress: IngressSettings | None = None  # present: the ingress controller runs even without an Ingress
    # Containers labkit cannot run as written get its stand-in workload (labkit.k8s.standin):
    # auto = on the netns runtime only; true = also for images the Docker engine lacks; false = never.
    stand_ins: bool | Literal["auto"] = "auto"

    @field_validator("pod_cidrs", "service_cidrs", mode="before")
    @classmethod
    def _cidrs(cls, value: Any) -> Any:
        return families.parse_cidrs(value)

    @field_validator("stand_ins", mode="before")
    @classmethod
    def _stand_ins(cls, value: Any) -> Any:
        if value == "auto" or type(value) is bool:
            return value
        raise ValueError(f"should be auto (the netns runtime only), true or false (got {value!r})")


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
    settings: Settings | None = None  # containerlab's; no effect
    debug: bool | None = None  # containerlab's; no effect
    mgmt: Mgmt | None = None
    cluster: Cluster | None = None
    topology: TopologyBody
    workloads: list[str | dict[str, Any]] = []
    expect: list[dict[str, Any]] = []

    @field_validator("name")
    @classmethod
    def _lab_name(cls, value: str) -> str:
        if not LAB_NAME.match(value) and not CLAB_LAB_NAME.match(value):
            raise ValueError(
                f"{value!r} is not a lab name: use 1-64 letters, digits, '-', '_' or '.', "
                "starting with a letter or digit (containerlab's rule)"
            )
        return value
