"""labkit-cni network configuration: parse and validate what arrives on stdin.

Standard library only: imported on the `labkit-cni` exec path.

    {
      "cniVersion": "1.1.0",
      "name": "labkit",                 # network name
      "type": "labkit-cni",
      "mode": "ptp",                    # optional: ptp (routed /32 pods; "routed" is its old name) or
                                        # bridge (pods on one Linux bridge holding the gateway, kubenet-style)
      "bridge": "cni0",                 # optional, bridge mode: the bridge's name
      "hairpinMode": true,              # optional, bridge mode: a port may send a frame back out of itself
      "mtu": 1500,                      # optional: pod and host veth MTU
      "ipam": {
        "type": "host-local",           # optional; built in (only host-local semantics)
        "subnet": "10.244.1.0/24",      # the node's podCIDR
        "gateway": "10.244.1.1",        # optional: default the subnet's .1
        "rangeStart": "10.244.1.10",    # optional
        "rangeEnd": "10.244.1.250",     # optional
        "dataDir": "/var/lib/cni/networks/labkit",   # optional
        "lockTimeout": 30,              # optional: seconds to wait for the IPAM lock (then code 11)
        "routes": [{"dst": "10.96.0.0/16"}]           # optional extra pod routes
      },
      "dns": {"nameservers": ["10.96.0.10"]},         # optional, passed to the result
      "prevResult": {...}, "runtimeConfig": {...}, "args": {...},
      "cni.dev/valid-attachments": [{"containerID": "...", "ifname": "eth0"}]   # GC only
    }
"""

from __future__ import annotations

import os

from .errors import (
    INCOMPATIBLE_VERSION,
    INVALID_CONFIG,
    INVALID_ENV,
    UNSUPPORTED_FIELD,
    CNIError,
)
from .ipam import DEFAULT_DATA_ROOT, Pool
from .lite import Addr, Net

SUPPORTED_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
LATEST = "1.1.0"
PLUGIN_TYPE = "labkit-cni"
IPAM_TYPES = (None, "", "host-local", "labkit-cni")
MODES = ("ptp", "bridge", "routed")  # routed: the first name of ptp
DEFAULT_BRIDGE = "cni0"

_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_REST = _FIRST | frozenset("_.-")


def valid_name(s) -> bool:
    """^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$ (the spec's network name / container id), without `re`."""
    return isinstance(s, str) and bool(s) and s[0] in _FIRST and all(c in _REST for c in s)


class Route:
    __slots__ = ("dst", "gw")

    def __init__(self, dst: Net, gw: Addr | None = None):
        self.dst, self.gw = dst, gw

    def __repr__(self) -> str:
        return f"Route({self.dst}, gw={self.gw})"


class NetConf:
    """A validated configuration (plain class: `dataclasses` costs ~6 ms to import)."""

    def __init__(self, *, cni_version: str, name: str, pool: Pool | None, data_dir: str,
                 mtu: int | None = None, routes: list[Route] | None = None,
                 dns: dict | None = None, prev_result: dict | None = None,
                 runtime_config: dict | None = None,
                 valid_attachments: list[tuple[str, str]] | None = None,
                 raw: dict | None = None, lock_timeout: float = 30.0, mode: str = "ptp",
                 bridge: str = DEFAULT_BRIDGE, hairpin: bool = True):
        self.lock_timeout = lock_timeout
        self.mode = mode
        self.bridge = bridge
        self.hairpin = hairpin
        self.cni_version = cni_version
        self.name = name
        self.pool = pool
        self.data_dir = data_dir
        self.mtu = mtu
        self.routes = routes or []
        self.dns = dns
        self.prev_result = prev_result
        self.runtime_config = runtime_config or {}
        self.valid_attachments = valid_attachments
        self.raw = raw or {}


def _bad(msg: str, details: str = "", code: int = INVALID_CONFIG) -> CNIError:
    return CNIError(code, msg, details)


def version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def check_version(raw: dict) -> str:
    v = raw.get("cniVersion")
    if v is None:
        raise _bad("invalid network configuration: cniVersion is required",
                   f"supported versions: {', '.join(SUPPORTED_VERSIONS)}")
    if not isinstance(v, str):
        raise _bad("invalid network configuration: cniVersion must be a string")
    if v not in SUPPORTED_VERSIONS:
        raise CNIError(INCOMPATIBLE_VERSION, f"incompatible CNI versions: config is {v!r}",
                       f"plugin supports {', '.join(SUPPORTED_VERSIONS)}")
    return v


def _ip(value, where: str) -> Addr:
    if not isinstance(value, str):
        raise _bad(f"invalid network configuration: {where} must be an IPv4 address string")
    try:
        return Addr(value)
    except ValueError as e:
        raise _bad(f"invalid network configuration: {where}: {value!r} is not an IPv4 address",
                   str(e)) from None


def _net(value, where: str) -> Net:
    if not isinstance(value, str):
        raise _bad(f"invalid network configuration: {where} must be a CIDR string like 10.244.1.0/24")
    try:
        return Net(value)
    except ValueError as e:
        raise _bad(f"invalid network configuration: {where}: {value!r} is not an IPv4 CIDR",
                   str(e)) from None


def parse(raw, *, need_ipam: bool = True) -> NetConf:
    """Validate `raw` (the decoded stdin JSON); raise CNIError 1/2/7 on bad input."""
    if not isinstance(raw, dict):
        raise _bad("invalid network configuration: expected a JSON object")
    version = check_version(raw)
    name = raw.get("name")
    if not valid_name(name):
        raise _bad(f"invalid network configuration: name {name!r} is not a valid network name",
                   "start with a letter or digit, then letters, digits, '_', '.', '-'")
    ptype = raw.get("type")
    if ptype is not None and not isinstance(ptype, str):
        raise _bad("invalid network configuration: type must be a string")
    mode = raw.get("mode", "ptp")
    if mode not in MODES:
        raise CNIError(UNSUPPORTED_FIELD, f"unsupported mode {mode!r}",
                       f"labkit-cni supports: {', '.join(MODES)}")
    mode = "ptp" if mode == "routed" else mode
    bridge = raw.get("bridge", DEFAULT_BRIDGE)
    if not (isinstance(bridge, str) and 0 < len(bridge) <= 15 and valid_name(bridge)):
        raise _bad(f"invalid network configuration: bridge {bridge!r} is not an interface name",
                   "1-15 letters, digits, '_', '.', '-', starting with a letter or digit")
    hairpin = raw.get("hairpinMode", True)
    if not isinstance(hairpin, bool):
        raise _bad(f"invalid network configuration: hairpinMode {hairpin!r} must be true or false")
    mtu = raw.get("mtu")
    if mtu is not None and (not isinstance(mtu, int) or isinstance(mtu, bool) or not 68 <= mtu <= 65535):
        raise _bad(f"invalid network configuration: mtu {mtu!r} must be an integer in 68..65535")
    dns = raw.get("dns")
    if dns is not None and not isinstance(dns, dict):
        raise _bad("invalid network configuration: dns must be an object")
    prev = raw.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise _bad("invalid network configuration: prevResult must be an object")
    rc = raw.get("runtimeConfig")
    if rc is None:
        rc = {}
    if not isinstance(rc, dict):
        raise _bad("invalid network configuration: runtimeConfig must be an object")

    ipam = raw.get("ipam")
    if ipam is None:
        ipam = {}
    if not isinstance(ipam, dict):
        raise _bad("invalid network configuration: ipam must be an object")
    itype = ipam.get("type")
    if itype not in IPAM_TYPES:
        raise CNIError(UNSUPPORTED_FIELD, f"unsupported ipam.type {itype!r}",
                       "labkit-cni has host-local style IPAM built in; omit ipam.type "
                       "or set it to 'host-local'")
    data_dir = ipam.get("dataDir") or os.path.join(DEFAULT_DATA_ROOT, name)
    if not isinstance(data_dir, str) or not data_dir.startswith("/"):
        raise _bad(f"invalid network configuration: ipam.dataDir {data_dir!r} must be an absolute path")

    lock_timeout = ipam.get("lockTimeout", 30)
    if isinstance(lock_timeout, bool) or not isinstance(lock_timeout, (int, float)) \
            or not 0 <= lock_timeout <= 3600:
        raise _bad(f"invalid network configuration: ipam.lockTimeout {lock_timeout!r} must be "
                   "a number of seconds in 0..3600")
    subnet_raw = ipam.get("subnet")
    if subnet_raw is None:
        ranges = ipam.get("ranges")
        if isinstance(ranges, list) and ranges and isinstance(ranges[0], list) and ranges[0] \
                and isinstance(ranges[0][0], dict):
            r0 = ranges[0][0]
            subnet_raw = r0.get("subnet")
            ipam = {**ipam, **{k: r0[k] for k in ("gateway", "rangeStart", "rangeEnd") if k in r0}}
    pool = None
    if subnet_raw is None:
        if need_ipam:
            raise _bad("invalid network configuration: ipam.subnet is required",
                       "the node's podCIDR, e.g. \"ipam\": {\"subnet\": \"10.244.1.0/24\"}")
    else:
        subnet = _net(subnet_raw, "ipam.subnet")
        if subnet.prefixlen > 30:
            raise _bad(f"invalid network configuration: ipam.subnet {subnet} is too small",
                       "need at least a /30: a gateway and one pod")
        gw = _ip(ipam["gateway"], "ipam.gateway") if ipam.get("gateway") else None
        start = _ip(ipam["rangeStart"], "ipam.rangeStart") if ipam.get("rangeStart") else None
        end = _ip(ipam["rangeEnd"], "ipam.rangeEnd") if ipam.get("rangeEnd") else None
        for what, val in (("gateway", gw), ("rangeStart", start), ("rangeEnd", end)):
            if val is not None and val not in subnet:
                raise _bad(f"invalid network configuration: ipam.{what} {val} is outside subnet {subnet}")
        pool = Pool.from_subnet(subnet, gw, start, end)
        if int(pool.start) > int(pool.end):
            raise _bad(f"invalid network configuration: ipam.rangeStart {pool.start} is after "
                       f"ipam.rangeEnd {pool.end}")
        if pool.size() < 1:
            raise _bad(f"invalid network configuration: no allocatable address in {subnet}")

    routes: list[Route] = []
    rlist = ipam.get("routes") or []
    if not isinstance(rlist, list):
        raise _bad("invalid network configuration: ipam.routes must be a list")
    for i, r in enumerate(rlist):
        if not isinstance(r, dict) or "dst" not in r:
            raise _bad(f"invalid network configuration: ipam.routes[{i}] needs a dst")
        dst = _net(r["dst"], f"ipam.routes[{i}].dst")
        gw = _ip(r["gw"], f"ipam.routes[{i}].gw") if r.get("gw") else None
        routes.append(Route(dst, gw))

    valid = None
    va = raw.get("cni.dev/valid-attachments")
    if va is not None:
        if not isinstance(va, list):
            raise _bad("invalid network configuration: cni.dev/valid-attachments must be a list")
        valid = []
        for i, a in enumerate(va):
            if not isinstance(a, dict) or not isinstance(a.get("containerID"), str) \
                    or not isinstance(a.get("ifname"), str):
                raise _bad(f"invalid network configuration: cni.dev/valid-attachments[{i}] needs "
                           "string containerID and ifname")
            valid.append((a["containerID"], a["ifname"]))

    return NetConf(
        cni_version=version, name=name, pool=pool, data_dir=data_dir, mtu=mtu, routes=routes,
        dns=dns, prev_result=prev, runtime_config=rc, valid_attachments=valid, raw=raw,
        lock_timeout=float(lock_timeout), mode=mode, bridge=bridge, hairpin=hairpin,
    )


def check_container_id(cid) -> str:
    if not cid or not isinstance(cid, str):
        raise CNIError(INVALID_ENV, "CNI_CONTAINERID is required")
    if not valid_name(cid):
        raise CNIError(INVALID_ENV, f"invalid CNI_CONTAINERID {cid!r}",
                       "letters, digits, '_', '.', '-'; starting with a letter or digit")
    return cid


def check_ifname(ifname) -> str:
    if not ifname or not isinstance(ifname, str):
        raise CNIError(INVALID_ENV, "CNI_IFNAME is required")
    if len(ifname) > 15 or ifname in (".", "..") or any(c in ifname for c in "/: \t\n"):
        raise CNIError(INVALID_ENV, f"invalid CNI_IFNAME {ifname!r}",
                       "at most 15 characters, no '/', ':' or whitespace, not '.' or '..'")
    return ifname


def parse_cni_args(s: str | None) -> dict[str, str]:
    """CNI_ARGS 'K1=V1;K2=V2' -> dict; CNIError(4) when malformed."""
    out: dict[str, str] = {}
    if not s:
        return out
    for part in s.split(";"):
        if not part:
            continue
        k, sep, v = part.partition("=")
        if not sep or not k:
            raise CNIError(INVALID_ENV, f"invalid CNI_ARGS pair {part!r}", "expected K=V;K2=V2")
        out[k] = v
    return out
