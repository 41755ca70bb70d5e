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
        "subnet": "10.244.1.0/24",      # the node's podCIDR (IPv4 or IPv6)
        "gateway": "10.244.1.1",        # optional: default the subnet's second address (.1, ::1)
        "rangeStart": "10.244.1.10",    # optional
        "rangeEnd": "10.244.1.250",     # optional
        "ranges": [                     # host-local's form: range sets, one per address family
          [{"subnet": "10.244.1.0/24"}],          # each range takes gateway/rangeStart/rangeEnd too;
          [{"subnet": "fd00:10:244:1::/64"}]      # a pod gets one address from each set, in order
        ],                              # (with "subnet" as well, that range set comes first)
        "dataDir": "/var/lib/cni/networks/labkit",   # optional
        "lockTimeout": 30,              # optional: seconds to wait for the IPAM lock (then code 11)
        "routes": [{"dst": "10.96.0.0/16"}, {"dst": "fd00:10:96::/112"}]   # optional extra pod
                                        # routes, each via its family's gateway unless "gw" says
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
from .lite import Addr, Addr6, Net, ip_address

SUPPORTED_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
LATEST = "1.1.0"
PLUGIN_TYPE = "labkit-cni"
IPAM_TYPES = (None, "", "host-local", "labkit-cni")
MODES = ("ptp", "bridge", "routed")  # routed: the first name of ptp
DEFAULT_BRIDGE = "cni0"
FAMILY_NAMES = {4: "IPv4", 6: "IPv6"}
SMALLEST = {4: 30, 6: 126}  # longest prefix with room for a gateway and one pod

_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_REST = _FIRST | frozenset("_.-")


def valid_name(s) -> bool:
    """^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$ (the spec's network name / container id), without `re`."""
    return isinstance(s, str) and bool(s) and s[0] in _FIRST and all(c in _REST for c in s)


class Route:
    __slots__ = ("dst", "gw")

    def __init__(self, dst: Net, gw: Addr | Addr6 | None = None):
        self.dst, self.gw = dst, gw

    @property
    def version(self) -> int:
        return self.dst.version

    def __repr__(self) -> str:
        return f"Route({self.dst}, gw={self.gw})"


class NetConf:
    """A validated configuration (plain class: `dataclasses` costs ~6 ms to import)."""

    def __init__(self, *, cni_version: str, name: str, pool: Pool | None, data_dir: str,
                 pools: list[Pool] | None = None,
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
        # one pool per range set (per address family), in the config's order; `pool` is the first
        self.pools = pools if pools is not None else ([pool] if pool is not None else [])
        self.pool = pool if pool is not None else (self.pools[0] if self.pools else None)
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


def _ip(value, where: str) -> Addr | Addr6:
    if not isinstance(value, str):
        raise _bad(f"invalid network configuration: {where} must be an IP address string")
    try:
        return ip_address(value)
    except ValueError as e:
        kind = "IPv6" if ":" in value else "IPv4"
        raise _bad(f"invalid network configuration: {where}: {value!r} is not an {kind} address",
                   str(e)) from None


def _net(value, where: str) -> Net:
    if not isinstance(value, str):
        raise _bad(f"invalid network configuration: {where} must be a CIDR string like 10.244.1.0/24 "
                   "or fd00:10:244:1::/64")
    try:
        return Net(value)
    except ValueError as e:
        kind = "IPv6" if ":" in value else "IPv4"
        raise _bad(f"invalid network configuration: {where}: {value!r} is not an {kind} CIDR",
                   str(e)) from None


def _pool(r: dict, where: str) -> Pool:
    """One host-local range ({subnet, gateway, rangeStart, rangeEnd}) as a Pool; `where` names its
    subnet's key in messages (ipam.subnet, ipam.ranges[1][0].subnet)."""
    subnet = _net(r.get("subnet"), where)
    base = where.rpartition(".")[0] or "ipam"
    if subnet.prefixlen > SMALLEST[subnet.version]:
        raise _bad(f"invalid network configuration: {where} {subnet} is too small",
                   f"need at least a /{SMALLEST[subnet.version]}: a gateway and one pod")
    vals = {}
    for what in ("gateway", "rangeStart", "rangeEnd"):
        if not r.get(what):
            vals[what] = None
            continue
        val = _ip(r[what], f"{base}.{what}")
        if val.version != subnet.version:
            raise _bad(f"invalid network configuration: {base}.{what} {val} is an "
                       f"{FAMILY_NAMES[val.version]} address in {FAMILY_NAMES[subnet.version]} "
                       f"subnet {subnet}", "each range's addresses are of its subnet's family")
        if val not in subnet:
            raise _bad(f"invalid network configuration: {base}.{what} {val} is outside subnet {subnet}")
        vals[what] = val
    pool = Pool.from_subnet(subnet, vals["gateway"], vals["rangeStart"], vals["rangeEnd"])
    if int(pool.start) > int(pool.end):
        raise _bad(f"invalid network configuration: {base}.rangeStart {pool.start} is after "
                   f"{base}.rangeEnd {pool.end}")
    if pool.size() < 1:
        raise _bad(f"invalid network configuration: no allocatable address in {subnet}")
    return pool


def _range_sets(ipam: dict) -> list[tuple[dict, str]]:
    """(range, where) of each range set: `subnet` (the old single form) first, then `ranges`, as
    host-local takes them; one range per set."""
    out = []
    if ipam.get("subnet") is not None:
        out.append((ipam, "ipam.subnet"))
    ranges = ipam.get("ranges")
    if ranges is None:
        return out
    if not isinstance(ranges, list):
        raise _bad("invalid network configuration: ipam.ranges must be a list of range sets",
                   'e.g. [[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:10:244:1::/64"}]]')
    for i, rset in enumerate(ranges):
        if not isinstance(rset, list) or not rset or not all(isinstance(r, dict) for r in rset):
            raise _bad(f"invalid network configuration: ipam.ranges[{i}] must be a non-empty list of "
                       "ranges like {\"subnet\": \"10.244.1.0/24\"}")
        if len(rset) > 1:
            raise CNIError(UNSUPPORTED_FIELD, f"ipam.ranges[{i}] has {len(rset)} ranges",
                           "labkit-cni takes one range per range set (one range set per address family)")
        if rset[0].get("subnet") is None:
            raise _bad(f"invalid network configuration: ipam.ranges[{i}][0].subnet is required")
        out.append((rset[0], f"ipam.ranges[{i}][0].subnet"))
    return out


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
    pools = []
    for r, where in _range_sets(ipam):
        pool = _pool(r, where)
        twin = next((p for p in pools if p.version == pool.version), None)
        if twin is not None:
            raise _bad(f"invalid network configuration: {where} {pool.subnet} is a second "
                       f"{FAMILY_NAMES[pool.version]} range set (after {twin.subnet})",
                       "one range set per address family: a pod gets one address of each family")
        pools.append(pool)
    if not pools and need_ipam:
        raise _bad("invalid network configuration: ipam.subnet is required",
                   "the node's podCIDR, e.g. \"ipam\": {\"subnet\": \"10.244.1.0/24\"}, or one "
                   "range set per family in \"ranges\"")

    routes: list[Route] = []
    rlist = ipam.get("routes") or []
    if not isinstance(rlist, list):
        raise _bad("invalid network configuration: ipam.routes must be a list")
    for i, r in enumerate(rlist):
        if not isinstance(r, dict) or "dst" not in r:
            raise _bad(f"invalid network configuration: ipam.routes[{i}] needs a dst")
        dst = _net(r["dst"], f"ipam.routes[{i}].dst")
        gw = _ip(r["gw"], f"ipam.routes[{i}].gw") if r.get("gw") else None
        if gw is not None and gw.version != dst.version:
            raise _bad(f"invalid network configuration: ipam.routes[{i}].gw {gw} is not of dst {dst}'s "
                       f"family ({FAMILY_NAMES[dst.version]})")
        if pools and not any(p.version == dst.version for p in pools):
            raise _bad(f"invalid network configuration: ipam.routes[{i}].dst {dst} is "
                       f"{FAMILY_NAMES[dst.version]}, and the pod gets no {FAMILY_NAMES[dst.version]} "
                       "address", "add a range set of that family, or drop the route")
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
        cni_version=version, name=name, pool=pools[0] if pools else None, pools=pools,
        data_dir=data_dir, mtu=mtu, routes=routes,
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
