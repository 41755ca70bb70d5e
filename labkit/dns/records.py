"""Cluster DNS records: the input model the orchestrator writes, and the record set of
the Kubernetes DNS-Based Service Discovery spec 1.1.0 built from it.

The model is what the orchestrator knows about the cluster's Services (namespace, name,
type, ClusterIPs, ports, endpoints, ExternalName) plus the zone and the upstream
forwarders. It round-trips through a JSON file (`DnsConfig.load` / `DnsConfig.dump`),
which is how the orchestrator hands it to `python -m labkit.dns.server`.

Both families: a Service's `cluster_ips` (one per family, the primary first) give its name
an A and/or an AAAA record and each a PTR (in-addr.arpa, or ip6.arpa nibble by nibble); an
endpoint's `ips` (its pod's addresses of the Service's families) likewise. A name lacking
the family asked is NODATA, never NXDOMAIN. The JSON's single `cluster_ip` and endpoint
`ip` of before dual-stack are still read (alone, or beside the lists they head).

`build_records(config)` turns it into a `RecordSet`, and `RecordSet.lookup(name, type)`
answers a question the way CoreDNS's kubernetes plugin does: an answer, NODATA (the
name exists with other types, or has children: NOERROR, no answer, SOA in authority),
NXDOMAIN (SOA in authority), or "outside" (not ours: forward it or refuse it).

Pure and import-light on purpose (json and ipaddress only; no pydantic, no dataclasses):
the server imports this module and is started inside network namespaces, where every
millisecond of interpreter start-up shows.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re

SPEC_VERSION = "1.1.0"

# RR types used here (IANA numbers).
A, NS, CNAME, SOA, PTR, HINFO, TXT, AAAA, SRV, OPT, ANY = 1, 2, 5, 6, 12, 13, 16, 28, 33, 41, 255
TYPE_NAMES = {A: "A", NS: "NS", CNAME: "CNAME", SOA: "SOA", PTR: "PTR", HINFO: "HINFO", TXT: "TXT",
              AAAA: "AAAA", SRV: "SRV", OPT: "OPT", ANY: "ANY"}

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5

SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "Headless", "ExternalName")
PROTOCOLS = ("TCP", "UDP", "SCTP")
# Namespaces every Kubernetes cluster has: their `<ns>.svc.<zone>` names exist (NODATA).
BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
DEFAULT_TTL = 5           # CoreDNS kubernetes plugin default
ANY_TTL = 8482            # CoreDNS's `any` plugin: the RFC 8482 answer's TTL
VERSION_TTL = 28800       # CoreDNS answers dns-version with this TTL

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_HOSTNAME = re.compile(r"^(?=.{1,253}\.?$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*"
                       r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.?$", re.IGNORECASE)


class ConfigError(ValueError):
    """The DNS config is invalid: every problem, each as `path: what is wrong`."""

    def __init__(self, problems: list[str], source: str = ""):
        self.problems = problems
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__("\n".join(prefix + p for p in problems))


# ---------------------------------------------------------------------------- model


class _Model:
    """Tiny value-object base: equality, repr and to_dict from `__slots__`."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and all(
            getattr(self, f) == getattr(other, f) for f in self.__slots__)

    def __repr__(self) -> str:
        body = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.__slots__)
        return f"{type(self).__name__}({body})"

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for f in self.__slots__:
            v = getattr(self, f)
            if isinstance(v, list):
                v = [x.to_dict() if isinstance(x, _Model) else x for x in v]
            out[f] = v
        return out


class ServicePort(_Model):
    """One port of a Service. `target_port` (numeric) is what headless SRV records carry."""

    __slots__ = ("name", "port", "protocol", "target_port")

    def __init__(self, port: int, name: str | None = None, protocol: str = "TCP",
                 target_port: int | None = None):
        self.name = name
        self.port = port
        self.protocol = protocol
        self.target_port = target_port


class Endpoint(_Model):
    """One endpoint of a Service: a pod and its addresses, at most one per family (`ips`,
    the pod's preferred family first; `ip` is the first). A dual-stack pod is one
    Endpoint with both, as the two EndpointSlices of its Service (one per family) name it."""

    __slots__ = ("ips", "hostname", "ready", "pod", "node")

    def __init__(self, ip: str | None = None, hostname: str | None = None, ready: bool = True,
                 pod: str | None = None, node: str | None = None, ips: list[str] | None = None):
        self.ips = _address_list(ip, ips, "ip")
        self.hostname = hostname
        self.ready = ready
        self.pod = pod
        self.node = node

    @property
    def ip(self) -> str:
        """The first address (the pod's preferred family's)."""
        return self.ips[0] if self.ips else ""


def _address_list(one: str | None, many: list[str] | None, key: str) -> list[str]:
    """The addresses given as a single `one` (the old key) and/or the list `many`. Both: they
    must agree, as a Service's clusterIP is its clusterIPs[0]. "None" (a headless
    Service's clusterIP) is no address."""
    if many is None:
        return [] if one in (None, "None") else [one]
    many = [ip for ip in many if ip != "None"]
    if one not in (None, "None") and (not many or many[0] != one):
        raise ValueError(f"{key} {one!r} is not the first of {key}s {many!r}")
    return list(many)


class Service(_Model):
    """A Service as DNS sees it. `cluster_ips`: its ClusterIPs, one per family, the
    primary first (`cluster_ip` is the first). Headless: `type` "Headless", or
    "ClusterIP" with no cluster IP (null or "None")."""

    __slots__ = ("namespace", "name", "type", "cluster_ips", "ports", "endpoints",
                 "external_name", "publish_not_ready_addresses")

    def __init__(self, namespace: str, name: str, type: str = "ClusterIP",
                 cluster_ip: str | None = None, ports: list[ServicePort] | None = None,
                 endpoints: list[Endpoint] | None = None, external_name: str | None = None,
                 publish_not_ready_addresses: bool = False, cluster_ips: list[str] | None = None):
        self.namespace = namespace
        self.name = name
        self.type = type
        self.cluster_ips = _address_list(cluster_ip, cluster_ips, "cluster_ip")
        self.ports = list(ports or [])
        self.endpoints = list(endpoints or [])
        self.external_name = external_name
        self.publish_not_ready_addresses = publish_not_ready_addresses

    @property
    def cluster_ip(self) -> str | None:
        """The primary ClusterIP; None for headless and ExternalName Services."""
        return self.cluster_ips[0] if self.cluster_ips else None

    @property
    def headless(self) -> bool:
        """Type Headless, or ClusterIP with no cluster IP (Kubernetes' `clusterIP: None`)."""
        return self.type == "Headless" or (self.type == "ClusterIP" and not self.cluster_ips)


class DnsConfig(_Model):
    """Everything the DNS server serves; the JSON file's top-level object.

    `upstreams`: forwarders for names outside the zone, "IP" or "IP:PORT" ("[v6]:port");
    empty means such queries are REFUSED. `nameservers`: the DNS service IP(s), the
    address of `ns.dns.<zone>` (the zone's NS). `namespaces`: namespaces that exist
    besides those of the services and the built-in ones (their `<ns>.svc.<zone>` is
    NODATA, not NXDOMAIN). `serial`: SOA serial (0: the server uses the config file's
    modification time). `pods`: "insecure" answers `<a>-<b>-<c>-<d>.<ns>.pod.<zone>` with
    that address (A), and an IPv6 address with its ':' as '-' (`fd00-10-244-1--5`: AAAA),
    for any existing namespace, as the Corefile of kubeadm and kind does (`pods insecure`);
    "disabled" does not (CoreDNS's plugin default).
    """

    __slots__ = ("zone", "ttl", "upstreams", "upstream_timeout", "nameservers",
                 "namespaces", "serial", "pods", "services")

    def __init__(self, zone: str = "cluster.local", services: list[Service] | None = None,
                 upstreams: list[str] | None = None, ttl: int = DEFAULT_TTL,
                 upstream_timeout: float = 2.0, nameservers: list[str] | None = None,
                 namespaces: list[str] | None = None, serial: int = 0,
                 pods: str = "insecure"):
        self.zone = zone
        self.ttl = ttl
        self.upstreams = list(upstreams or [])
        self.upstream_timeout = upstream_timeout
        self.nameservers = list(nameservers or [])
        self.namespaces = list(namespaces or [])
        self.serial = serial
        self.pods = pods
        self.services = list(services or [])

    # -- JSON ------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: object, source: str = "") -> DnsConfig:
        """Validate and build; raises ConfigError listing every problem."""
        problems: list[str] = []
        cfg = _parse_config(data, problems)
        if cfg is not None:
            _check_config(cfg, problems)
        if problems or cfg is None:
            raise ConfigError(problems or ["invalid configuration"], source)
        return cfg

    @classmethod
    def from_json(cls, text: str, source: str = "") -> DnsConfig:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ConfigError([f"not valid JSON: {e}"], source) from None
        return cls.from_dict(data, source)

    @classmethod
    def load(cls, path: str) -> DnsConfig:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ConfigError([f"cannot read: {e.strerror}"], path) from None
        return cls.from_json(text, path)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def validate(self) -> None:
        """Raise ConfigError unless this would load (types, names, addresses)."""
        DnsConfig.from_dict(self.to_dict())

    def dump(self, path: str) -> None:
        """Validate, then write atomically (temp file + rename): a server reloading on
        SIGHUP never reads half a file, nor one it would refuse."""
        self.validate()
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(self.to_json())
        os.replace(tmp, path)


def parse_upstream(text: str) -> tuple[str, int]:
    """"1.2.3.4" | "1.2.3.4:5353" | "fd00::1" | "[fd00::1]:5353" -> (ip, port)."""
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(text)
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = int(p)
    ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(text)
    return host, port


# -- parsing with collected problems ---------------------------------------------

_FIELDS = {
    "config": {"zone": str, "ttl": int, "upstreams": list, "upstream_timeout": (int, float),
               "nameservers": list, "namespaces": list, "serial": int, "pods": str,
               "services": list},
    "service": {"namespace": str, "name": str, "type": str, "cluster_ip": (str, type(None)),
                "cluster_ips": list, "ports": list, "endpoints": list, "external_name": (str, type(None)),
                "publish_not_ready_addresses": bool},
    "port": {"name": (str, type(None)), "port": int, "protocol": str,
             "target_port": (int, type(None))},
    "endpoint": {"ip": str, "ips": list, "hostname": (str, type(None)), "ready": bool,
                 "pod": (str, type(None)), "node": (str, type(None))},
}
_REQUIRED = {"config": (), "service": ("namespace", "name"), "port": ("port",),
             "endpoint": ()}   # an endpoint's `ip` or `ips`: _addresses


def _fields(kind: str, data: object, path: str, problems: list[str]) -> dict[str, object] | None:
    if not isinstance(data, dict):
        problems.append(f"{path or 'top level'}: must be an object")
        return None
    spec = _FIELDS[kind]
    out: dict[str, object] = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else key
        if key not in spec:
            problems.append(f"{where}: unknown field; valid: {', '.join(spec)}")
            continue
        want = spec[key]
        # bool is an int in Python; never accept it where a number is meant.
        if (isinstance(value, bool) and want is not bool) or not isinstance(value, want):
            problems.append(f"{where}: wrong type {type(value).__name__}")
            continue
        out[key] = value
    for key in _REQUIRED[kind]:
        if key not in data:
            problems.append(f"{path + '.' if path else ''}{key}: required")
    return out


def _parse_config(data: object, problems: list[str]) -> DnsConfig | None:
    top = _fields("config", data, "", problems)
    if top is None:
        return None
    services = []
    for i, sd in enumerate(top.pop("services", [])):
        spath = f"services[{i}]"
        s = _fields("service", sd, spath, problems)
        if s is None or "namespace" not in s or "name" not in s:
            continue
        cluster_ips = _addresses(s, "cluster_ip", spath, problems)
        ports = []
        for j, pd in enumerate(s.pop("ports", [])):
            p = _fields("port", pd, f"{spath}.ports[{j}]", problems)
            if p is not None and "port" in p:
                ports.append(ServicePort(**p))
        eps = []
        for j, ed in enumerate(s.pop("endpoints", [])):
            epath = f"{spath}.endpoints[{j}]"
            e = _fields("endpoint", ed, epath, problems)
            if e is None:
                continue
            ips = _addresses(e, "ip", epath, problems)
            if ips:
                eps.append(Endpoint(ips=ips, **e))
            else:
                problems.append(f"{epath}.ip: required (or ips: one address per family)")
        services.append(Service(ports=ports, endpoints=eps, cluster_ips=cluster_ips, **s))
    for key in ("upstreams", "nameservers", "namespaces"):
        for j, v in enumerate(top.get(key, [])):
            if not isinstance(v, str):
                problems.append(f"{key}[{j}]: must be a string")
    return DnsConfig(services=services, **top)


def _check_ip(value: str, where: str, problems: list[str]
              ) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address `value` names, or None (and a problem): not an address, or one no
    cluster has (an IPv6 zone index, an IPv4-mapped IPv6 address)."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        problems.append(f"{where}: {value!r} is not an IP address")
        return None
    if ip.version == 6 and ip.scope_id:
        problems.append(f"{where}: {value!r} has a zone index (%{ip.scope_id}); "
                        "a cluster address has none")
        return None
    if ip.version == 6 and ip.ipv4_mapped:
        problems.append(f"{where}: {value!r} is an IPv4-mapped IPv6 address; "
                        f"write the IPv4 address {ip.ipv4_mapped}")
        return None
    return ip


def _addresses(d: dict[str, object], key: str, path: str, problems: list[str]) -> list[str]:
    """Pop the addresses of `d`: the single `key` (the format before dual-stack) and/or
    the list `key + "s"` (both: the single one is the list's first, as a Service's
    clusterIP is its clusterIPs[0]). Each an address, at most one per family; every
    problem is reported, and what was given returned all the same."""
    single, listed = d.pop(key, None), d.pop(key + "s", None)
    if listed is None:
        given = [] if single in (None, "None") else [(f"{path}.{key}", single)]
    else:
        if listed == ["None"]:     # a headless Service's clusterIPs
            listed = []
        given = [(f"{path}.{key}s[{k}]", v) for k, v in enumerate(listed)]
        if single not in (None, "None") and (not listed or listed[0] != single):
            problems.append(f"{path}.{key}: {single!r} must be the first of {key}s {listed!r}")
    family: dict[int, str] = {}
    for where, value in given:
        if not isinstance(value, str):
            problems.append(f"{where}: must be a string")
            continue
        ip = _check_ip(value, where, problems)
        if ip is not None and ip.version in family:
            problems.append(f"{where}: a second IPv{ip.version} address ({family[ip.version]!r}, "
                            f"{value!r}); at most one per family")
        elif ip is not None:
            family[ip.version] = value
    return [str(v) for _, v in given]


def _check_config(cfg: DnsConfig, problems: list[str]) -> None:
    zone = cfg.zone.rstrip(".").lower()
    if not zone or not all(_LABEL.match(x) for x in zone.split(".")):
        problems.append(f"zone: {cfg.zone!r} is not a domain name (e.g. cluster.local)")
    if not 0 <= cfg.ttl <= 2**31 - 1:
        problems.append("ttl: must be 0..2147483647")
    if not 0 <= cfg.serial <= 2**32 - 1:
        problems.append("serial: must be 0..4294967295")
    if cfg.pods not in ("insecure", "disabled"):
        problems.append(f"pods: {cfg.pods!r}; valid: insecure, disabled")
    if not 0 < cfg.upstream_timeout <= 60:
        problems.append("upstream_timeout: seconds, > 0 and <= 60")
    for j, up in enumerate(cfg.upstreams):
        if isinstance(up, str):
            try:
                parse_upstream(up)
            except ValueError:
                problems.append(f"upstreams[{j}]: {up!r} is not IP or IP:PORT")
    for j, ip in enumerate(cfg.nameservers):
        if isinstance(ip, str):
            _check_ip(ip, f"nameservers[{j}]", problems)
    for j, ns in enumerate(cfg.namespaces):
        if isinstance(ns, str) and not _LABEL.match(ns):
            problems.append(f"namespaces[{j}]: {ns!r} is not a DNS label")
    seen: set[tuple[str, str]] = set()
    for i, s in enumerate(cfg.services):
        path = f"services[{i}]"
        if not _LABEL.match(s.namespace):
            problems.append(f"{path}.namespace: {s.namespace!r} is not a DNS label")
        if not _LABEL.match(s.name):
            problems.append(f"{path}.name: {s.name!r} is not a DNS label")
        if (s.namespace, s.name) in seen:
            problems.append(f"{path}: duplicate service {s.namespace}/{s.name}")
        seen.add((s.namespace, s.name))
        if s.type not in SERVICE_TYPES:
            problems.append(f"{path}.type: {s.type!r}; valid: {', '.join(SERVICE_TYPES)}")
        if s.type == "ExternalName":
            if not s.external_name:
                problems.append(f"{path}.external_name: required for type ExternalName")
            elif not _HOSTNAME.match(s.external_name):
                problems.append(f"{path}.external_name: {s.external_name!r} is not a DNS name")
        elif s.type == "Headless":
            if s.cluster_ips:
                problems.append(f"{path}.cluster_ip: must be null for type Headless")
        elif s.type in SERVICE_TYPES and not s.headless:
            if not s.cluster_ips:
                problems.append(f"{path}.cluster_ip: required for type {s.type} "
                                "(or cluster_ips: one address per family)")
        for j, p in enumerate(s.ports):
            ppath = f"{path}.ports[{j}]"
            # Service port names are DNS labels (container ports: IANA_SVC_NAME).
            if p.name is not None and p.name != "" and not _LABEL.match(p.name):
                problems.append(f"{ppath}.name: {p.name!r} is not a DNS label "
                                "(lowercase letters, digits, '-', <= 63 chars)")
            if p.protocol not in PROTOCOLS:
                problems.append(f"{ppath}.protocol: {p.protocol!r}; valid: {', '.join(PROTOCOLS)}")
            if not 0 < p.port < 65536:
                problems.append(f"{ppath}.port: must be 1..65535")
            if p.target_port is not None and not 0 < p.target_port < 65536:
                problems.append(f"{ppath}.target_port: must be 1..65535")
        for j, e in enumerate(s.endpoints):
            epath = f"{path}.endpoints[{j}]"
            if e.hostname is not None and not _LABEL.match(e.hostname):
                problems.append(f"{epath}.hostname: {e.hostname!r} is not a DNS label")


# ---------------------------------------------------------------------------- records

RR = tuple  # (owner fqdn lowercase, type, ttl, rdata)
# rdata: A/AAAA: "ip"; CNAME/PTR/NS: "target."; TXT: ("s", ...);
# SRV: (priority, weight, port, "target."); SOA: (mname, rname, serial, refresh, retry,
# expire, minimum)


class Answer:
    """What to answer: rcode and the three sections. `outside`: not in our zone (forward
    or refuse). `chase`: the answer ends in a CNAME to a name outside the zone, which a
    server with upstreams may resolve to complete the answer."""

    __slots__ = ("rcode", "answer", "authority", "additional", "outside", "chase")

    def __init__(self, rcode: int = NOERROR, answer: list | None = None,
                 authority: list | None = None, additional: list | None = None,
                 outside: bool = False, chase: str | None = None):
        self.rcode = rcode
        self.answer = answer or []
        self.authority = authority or []
        self.additional = additional or []
        self.outside = outside
        self.chase = chase

    @property
    def nodata(self) -> bool:
        return self.rcode == NOERROR and not self.answer and not self.outside

    def __repr__(self) -> str:
        return (f"Answer(rcode={self.rcode}, answer={self.answer}, "
                f"authority={self.authority}, additional={self.additional}, "
                f"outside={self.outside}, chase={self.chase})")


def fqdn(name: str) -> str:
    name = name.lower()
    return name if name.endswith(".") else name + "."


class RecordSet:
    """All names of the zone (empty non-terminals included) with their RRsets, plus
    the PTR records of the reverse names we own."""

    def __init__(self, zone: str, ttl: int, nodes: dict[str, dict[int, list[RR]]],
                 reverse: dict[str, list[RR]], soa: RR, upstreams: list[tuple[str, int]],
                 upstream_timeout: float, pod_namespaces: frozenset[str] = frozenset()):
        self.zone = zone
        self.pod_namespaces = pod_namespaces   # "insecure" pod records for these
        self.ttl = ttl
        self.nodes = nodes
        self.reverse = reverse
        self.soa = soa
        self.upstreams = upstreams
        self.upstream_timeout = upstream_timeout

    def in_zone(self, name: str) -> bool:
        return name == self.zone or name.endswith("." + self.zone)

    def names(self) -> list[str]:
        return list(self.nodes) + list(self.reverse)

    def lookup(self, qname: str, qtype: int) -> Answer:
        """The answer to (qname, qtype), case-insensitively.

        A name exists if it has records or children (empty non-terminals, RFC 8020):
        other types get NODATA, names that do not exist NXDOMAIN, both with the SOA.
        This is CoreDNS's answer everywhere the spec's names are concerned (apex,
        svc/pod, namespaces, services, endpoints, SRV names, headless services with no
        ready endpoint: NXDOMAIN). Where CoreDNS's parser has quirks we answer by the
        rule instead: `_tcp.<svc>...` (an empty non-terminal) and `dns.<zone>` are
        NODATA, not NXDOMAIN; SOA for a missing name is NXDOMAIN, not NODATA; A at an
        SRV name is NODATA, not the service's address. ANY gets the minimal answer of
        RFC 8482 (what CoreDNS's `any` plugin sends): at a name that exists, its CNAME
        if it is an alias, else one synthesized HINFO "RFC8482" ""; at a reverse name,
        its PTR (one RRset).
        """
        name = fqdn(qname)
        if name in self.reverse:
            if qtype in (PTR, ANY):
                return Answer(NOERROR, list(self.reverse[name]))
            # CoreDNS falls through to the next plugin (forward) for other types.
            return Answer(outside=True)
        if not self.in_zone(name):
            return Answer(outside=True)
        answer: list[RR] = []
        seen = {name}
        while True:
            node = self.nodes.get(name)
            if node is None:
                node = self._pod_node(name)
            if node is None:
                return Answer(NXDOMAIN, answer, [self.soa])
            if qtype == ANY:
                rrs = node.get(CNAME) or [(name, HINFO, ANY_TTL, ("RFC8482", ""))]
            else:
                rrs = node.get(qtype, [])
            if rrs:
                answer.extend(rrs)
                return Answer(NOERROR, answer, [], self._additional(rrs))
            cname = node.get(CNAME)
            if cname and qtype != CNAME:
                answer.extend(cname)
                target = cname[0][3]
                if not self.in_zone(target):
                    return Answer(NOERROR, answer, chase=target)
                if target in seen:
                    return Answer(NOERROR, answer)
                seen.add(target)
                name = target
                continue
            # The name exists (records of other types, or children): NODATA.
            return Answer(NOERROR, answer, [self.soa] if not answer else [])

    def _pod_node(self, name: str) -> dict[int, list[RR]] | None:
        """`<dashed ip>.<ns>.pod.<zone>` in `pods insecure` mode (CoreDNS: any address,
        in a namespace that exists)."""
        if not self.pod_namespaces:
            return None
        parts = name[:-len(self.zone) - 1].split(".")
        if len(parts) != 3 or parts[2] != "pod" or parts[1] not in self.pod_namespaces:
            return None
        label = parts[0]
        if label.count("-") == 3 and "--" not in label:
            text = label.replace("-", ".")
        else:
            text = label.replace("-", ":")
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            return None
        if ip.version == 6 and ip.scope_id:   # "fe80--1%eth0": no address of a pod (nor Go's)
            return None
        rtype = AAAA if ip.version == 6 else A
        return {rtype: [(name, rtype, self.ttl, str(ip))]}

    def _additional(self, rrs: list[RR]) -> list[RR]:
        extra: list[RR] = []
        for _owner, rtype, _ttl, rdata in rrs:
            if rtype == SRV:
                target = rdata[3]
            elif rtype == NS:
                target = rdata
            else:
                continue
            node = self.nodes.get(target, {})
            for t in (A, AAAA):
                for rr in node.get(t, []):
                    if rr not in extra:
                        extra.append(rr)
        return extra


def endpoint_hostname(ep: Endpoint, ip: str | None = None) -> str:
    """The spec's _hostname_ of the endpoint's address `ip` (default: its first): the
    endpoint's hostname, else a system-assigned id. That is CoreDNS's: the address with
    '.' or ':' replaced by '-' ("10-244-1-5", "fd00-10-244-1--5"), a '0' appended when it
    would end in '-' ("fd00--0" for fd00::). So without a hostname a dual-stack endpoint
    has one name per family, each with that family's record (one per EndpointSlice)."""
    if ep.hostname:
        return ep.hostname.lower()
    text = str(ipaddress.ip_address(ip or ep.ip))
    if ":" not in text:
        return text.replace(".", "-")
    dashed = text.replace(":", "-")
    return dashed + "0" if dashed.endswith("-") else dashed


def reverse_name(ip: str) -> str:
    """in-addr.arpa for IPv4; ip6.arpa, nibble by nibble (RFC 3596), for IPv6."""
    return ipaddress.ip_address(ip).reverse_pointer + "."


def _addr_type(ip: str) -> int:
    return AAAA if ":" in ip else A


def _canonical(ip: str) -> str:
    """RFC 5952 text: one spelling per address, so records and names never double."""
    return str(ipaddress.ip_address(ip))


def build_records(cfg: DnsConfig, serial: int | None = None) -> RecordSet:
    """The spec 1.1.0 record set of `cfg`. `serial` overrides cfg.serial for the SOA."""
    zone = fqdn(cfg.zone)
    ttl = cfg.ttl
    nodes: dict[str, dict[int, list[RR]]] = {}
    reverse: dict[str, list[RR]] = {}

    def add(owner: str, rtype: int, rdata: object, rr_ttl: int = ttl) -> None:
        rrset = nodes.setdefault(owner, {}).setdefault(rtype, [])
        rr = (owner, rtype, rr_ttl, rdata)
        if rr not in rrset:
            rrset.append(rr)

    def add_ptr(ip: str, target: str) -> None:
        owner = reverse_name(ip)
        rrset = reverse.setdefault(owner, [])
        rr = (owner, PTR, ttl, target)
        if rr not in rrset:
            rrset.append(rr)

    nsname = f"ns.dns.{zone}"
    soa = (zone, SOA, ttl, (nsname, f"hostmaster.{zone}",
                            serial if serial is not None else cfg.serial,
                            7200, 1800, 86400, ttl))
    add(zone, SOA, soa[3])
    add(zone, NS, nsname)
    nodes.setdefault(nsname, {})
    for ip in map(_canonical, cfg.nameservers):
        add(nsname, _addr_type(ip), ip)
    add(f"dns-version.{zone}", TXT, (SPEC_VERSION,), VERSION_TTL)
    # CoreDNS answers NODATA for the apex, svc.<zone>, pod.<zone> and every existing
    # namespace's <ns>.svc.<zone>.
    nodes.setdefault(f"svc.{zone}", {})
    nodes.setdefault(f"pod.{zone}", {})
    namespaces = {ns.lower() for ns in (*BUILTIN_NAMESPACES, *cfg.namespaces,
                                         *(s.namespace for s in cfg.services))}
    for ns in namespaces:
        nodes.setdefault(f"{ns}.svc.{zone}", {})
        if cfg.pods == "insecure":
            nodes.setdefault(f"{ns}.pod.{zone}", {})

    for s in cfg.services:
        base = f"{s.name.lower()}.{s.namespace.lower()}.svc.{zone}"
        if s.type == "ExternalName":
            target = fqdn(s.external_name or "")
            if _HOSTNAME.match(target):
                add(base, CNAME, target)
            continue
        eps = [e for e in s.endpoints if e.ready or s.publish_not_ready_addresses]
        if not s.headless:
            # One A or AAAA per ClusterIP (a dual-stack Service has both); the SRV
            # target is the service name, so the additional section carries both.
            for ip in map(_canonical, s.cluster_ips):
                add(base, _addr_type(ip), ip)
                add_ptr(ip, base)
            for p in s.ports:
                add(base, SRV, (0, 0, p.port, base))
                if p.name:
                    add(f"_{p.name}._{p.protocol.lower()}.{base}", SRV, (0, 0, p.port, base))
            # CoreDNS also answers endpoint names of non-headless services.
            for e in eps:
                for ip in map(_canonical, e.ips):
                    add(f"{endpoint_hostname(e, ip)}.{base}", _addr_type(ip), ip)
            continue
        for e in eps:
            for ip in map(_canonical, e.ips):
                target = f"{endpoint_hostname(e, ip)}.{base}"
                add(base, _addr_type(ip), ip)
                add(target, _addr_type(ip), ip)
                add_ptr(ip, target)
                for p in s.ports:
                    port = p.target_port or p.port
                    add(base, SRV, (0, 0, port, target))
                    if p.name:
                        add(f"_{p.name}._{p.protocol.lower()}.{base}", SRV, (0, 0, port, target))

    # SRV weights as CoreDNS gives them: equal shares of 100 within an RRset.
    for node in nodes.values():
        srvs = node.get(SRV)
        if srvs:
            weight = max(1, 100 // len(srvs))
            node[SRV] = [(o, t, tt, (0, weight, d[2], d[3])) for o, t, tt, d in srvs]
    # Empty non-terminals: every ancestor of a name, up to the apex, exists.
    for name in list(nodes):
        while name != zone:
            name = name.split(".", 1)[1]
            if name in nodes:
                break
            nodes[name] = {}
    upstreams = [parse_upstream(u) for u in cfg.upstreams]
    pod_namespaces = frozenset(namespaces) if cfg.pods == "insecure" else frozenset()
    return RecordSet(zone, ttl, nodes, reverse, soa, upstreams, cfg.upstream_timeout,
                     pod_namespaces)
