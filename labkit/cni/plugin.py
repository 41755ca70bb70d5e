"""labkit-cni: the pod network plugin (CNI spec 1.1.0) and its in-process API.

Two modes (the config's "mode"): `ptp`, below, and `bridge` (kubenet, the reference
`bridge` plugin: pods on one Linux bridge per node; see bridged.py). Same verbs, IPAM,
results and errors in both.

Why routed (ptp-style) by default: every pod gets an `IP/32`, a link
route to the node's gateway address and `default via` it; the node gets a
`/32` route to the pod through the pod's veth. There is no bridge, so no L2
broadcast domain, no ARP flooding between pods, no MAC learning; every hop is
an L3 hop that shows up in `ip route` and is traced by `traceroute`, and the
same node-to-node routing (host-gw routes or a vxlan device) works unchanged
on top. This is what kindnet (kind's default CNI) and Calico do.

What ADD does (the node is the namespace the plugin runs in), per address family the
config has a range set of (IPv4, IPv6 or both: one address of each, in the config's order):

    node:  veth<8 hex>  up, alias "labkit-cni <network> <ifname> <container id>"
      v4:  route <pod ip>/32 dev veth<8 hex> scope link
           <gateway>/32 on lo (idempotent), lo up, net.ipv4.ip_forward=1
      v6:  route <pod ip6>/128 dev veth<8 hex>
           <gateway6>/128 nodad on veth<8 hex> (accept_dad 0), net.ipv6.conf.all.forwarding=1
    pod:   <ifname> up, lo up
      v4:  <pod ip>/32 on <ifname>
           route <gateway> dev <ifname> scope link
           route default via <gateway> dev <ifname>   (+ ipam.routes of IPv4)
      v6:  <pod ip6>/128 nodad on <ifname>, accept_ra 0 and accept_dad 0 on <ifname>
           route <gateway6> dev <ifname>
           route default via <gateway6> dev <ifname>  (+ ipam.routes of IPv6)

IPv6's gateway sits on the pod's own host veth, not on lo: a node answers an IPv4 ARP
request for any of its addresses, but an IPv6 Neighbor Solicitation only for an address
of the interface it arrives on. So, as the reference `ptp` plugin does, every host veth
holds the gateway's /128 (no proxy_ndp needed); `nodad` on both ends makes the
addresses usable the moment ADD returns (no `tentative`), and accept_ra=0 keeps a
router advertisement from adding addresses or routes to a pod the plugin configured.

Two call paths share this module: the `labkit-cni` executable
(`labkit.cni.main`, exec'd per pod, standard library only) and the
orchestrator's in-process `execute(...)`, which can work on a node that is
itself a network namespace (`node_netns=`) from a thread that setns()es
into it; setns(CLONE_NEWNET) only moves the calling thread, and netlink
sockets stay bound to the namespace they were created in.
"""

from __future__ import annotations

import errno
import os

from . import config as cfg
from .errors import (
    CHECK_FAILED,
    DECODE_FAILURE,
    INTERFACE_EXISTS,
    INVALID_CONFIG,
    INTERNAL,
    INVALID_ENV,
    IO_FAILURE,
    NETLINK_FAILURE,
    NOT_AVAILABLE,
    UNKNOWN_CONTAINER,
    CNIError,
)
from labkit.net import netlink as nl
from labkit.net.netlink import IFF_UP, Netlink, NetlinkError

from .ipam import Pool, Store

COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")
ALIAS_PREFIX = "labkit-cni"


try:  # the builtin module: hashlib pulls in OpenSSL (~3 ms) on the exec path
    from _sha256 import sha256 as _sha256
except ImportError:  # pragma: no cover - other Pythons
    from hashlib import sha256 as _sha256


def host_veth_name(container_id: str, ifname: str) -> str:
    """Node-side veth name: 'veth' + 8 hex of sha256(container id, ifname) (12 chars)."""
    return "veth" + _sha256(f"{container_id}\0{ifname}".encode()).hexdigest()[:8]


def host_veth_alias(network: str, container_id: str, ifname: str) -> str:
    return f"{ALIAS_PREFIX} {network} {ifname} {container_id}"[:255]


def version_info(cni_version: str = cfg.LATEST) -> dict:
    return {"cniVersion": cni_version, "supportedVersions": list(cfg.SUPPORTED_VERSIONS)}


# ---------------------------------------------------------------------------
# the in-process API


def execute(
    command: str,
    config: dict | bytes | str | None,
    *,
    container_id: str | None = None,
    netns: str | None = None,
    ifname: str | None = None,
    args: str | dict | None = None,
    node_netns: str | None = None,
) -> dict:
    """Run one CNI command; return the result dict ({} when the spec prints nothing).

    `config` is the network configuration (a dict, or its JSON text/bytes).
    `netns` is the pod's namespace path, `node_netns` the node's (a path like
    /run/netns/<name>; None = the caller's own namespace). Raises CNIError.
    """
    if node_netns is None:
        return _guarded(command, config, container_id, netns, ifname, args)
    from labkit.net.netns import run_in_netns  # in-process callers only: not on the exec path

    try:
        return run_in_netns(node_netns, lambda: _guarded(command, config, container_id, netns, ifname, args))
    except OSError as e:  # _guarded turns every failure inside into a CNIError: this is entering the node
        raise CNIError(IO_FAILURE, f"cannot enter node namespace {node_netns}", str(e)) from None


def _guarded(command, config, container_id, netns, ifname, args) -> dict:
    """_execute, with every failure turned into a CNIError (the API's one exception type)."""
    try:
        return _execute(command, config, container_id, netns, ifname, args)
    except CNIError:
        raise
    except NetlinkError as e:
        raise _nl_error(e, f"{command} {container_id or ''}/{ifname or ''}") from e
    except OSError as e:
        raise CNIError(IO_FAILURE, f"{command}: {e.strerror or e}", str(e)) from e
    except Exception as e:  # noqa: BLE001 - the API promises CNIError only
        raise CNIError(INTERNAL, f"{command}: internal error: {type(e).__name__}: {e}",
                       repr(e)) from e


def _execute(command, config, container_id, netns, ifname, args) -> dict:
    if command not in COMMANDS:
        raise CNIError(INVALID_ENV, f"unknown CNI_COMMAND {command!r}",
                       f"expected one of {', '.join(COMMANDS)}")
    raw = decode_config(config, required=command != "VERSION")
    if command == "VERSION":
        v = raw.get("cniVersion") if isinstance(raw, dict) else None
        return version_info(v if v in cfg.SUPPORTED_VERSIONS else cfg.LATEST)
    if isinstance(args, str):
        cfg.parse_cni_args(args)
    conf = cfg.parse(raw, need_ipam=command in ("ADD", "STATUS"))
    if command == "ADD":
        if not netns:
            raise CNIError(INVALID_ENV, "CNI_NETNS is required for ADD")
        return cmd_add(conf, cfg.check_container_id(container_id), netns, cfg.check_ifname(ifname))
    if command == "DEL":
        cmd_del(conf, cfg.check_container_id(container_id), netns or None,
                cfg.check_ifname(ifname))
        return {}
    if command == "CHECK":
        if cfg.version_tuple(conf.cni_version) < (0, 4, 0):
            raise CNIError(cfg.INCOMPATIBLE_VERSION,
                           f"CHECK is not supported by cniVersion {conf.cni_version}",
                           "CHECK needs cniVersion 0.4.0 or later")
        if not netns:
            raise CNIError(INVALID_ENV, "CNI_NETNS is required for CHECK")
        cmd_check(conf, cfg.check_container_id(container_id), netns, cfg.check_ifname(ifname))
        return {}
    if command == "STATUS":
        cmd_status(conf)
        return {}
    cmd_gc(conf)
    return {}


def decode_config(config, *, required: bool = True):
    if isinstance(config, dict):
        return config
    if config is None or (isinstance(config, (str, bytes)) and not config.strip()):
        if required:
            raise CNIError(DECODE_FAILURE, "no network configuration on stdin",
                           "the runtime must pass the network configuration as JSON on stdin")
        return {}
    from .lite import loads

    try:
        raw = loads(config)
    except ValueError as e:
        raise CNIError(DECODE_FAILURE, "failed to decode network configuration JSON", str(e)) from None
    if not isinstance(raw, dict):
        raise CNIError(DECODE_FAILURE, "network configuration must be a JSON object",
                       f"got {type(raw).__name__}")
    return raw


# ---------------------------------------------------------------------------
# commands


def _open_netns(netns: str, command: str) -> int:
    try:
        return os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CNIError(UNKNOWN_CONTAINER, f"{command}: network namespace {netns} does not exist",
                       "CNI_NETNS must name an existing network namespace") from None
    except OSError as e:
        raise CNIError(IO_FAILURE, f"{command}: cannot open network namespace {netns}", str(e)) from e


def _pod_netlink(fd: int) -> Netlink:
    return Netlink.in_netns(f"/proc/self/fd/{fd}")


def _nl_error(e: OSError, what: str) -> CNIError:
    return CNIError(NETLINK_FAILURE, f"{what}: {e.strerror or e}", str(e))


class PodAddress:
    """One family's part of an attachment: the pool (range set) it came from, and the address."""

    __slots__ = ("gateway", "ip", "pool", "version")

    def __init__(self, pool: Pool, ip):
        self.pool, self.ip = pool, str(ip)
        self.gateway, self.version = str(pool.gateway), pool.version

    def __repr__(self) -> str:
        return f"PodAddress({self.ip}, gw={self.gateway})"


def cmd_add(conf: cfg.NetConf, cid: str, netns: str, ifname: str) -> dict:
    host = host_veth_name(cid, ifname)
    podfd = _open_netns(netns, "ADD")
    try:
        node = Netlink()
        try:
            pod = _pod_netlink(podfd)
        except OSError as e:
            node.close()
            raise CNIError(UNKNOWN_CONTAINER, f"ADD: {netns} is not a network namespace",
                           str(e)) from e
        try:
            if pod.link(ifname) is not None:
                raise CNIError(INTERFACE_EXISTS,
                               f"interface {ifname} already exists in {netns}",
                               "ADD on an existing attachment: DEL it first")
            with Store(conf.data_dir, conf.lock_timeout) as store:
                ips = store.allocate_all(conf.pools, cid, ifname)
            addrs = [PodAddress(pool, ip) for pool, ip in zip(conf.pools, ips, strict=True)]
            try:
                result = _wire(conf, node, pod, podfd, host, cid, netns, ifname, addrs)
            except BaseException:
                with Store(conf.data_dir, conf.lock_timeout) as store:
                    store.release(cid, ifname)
                try:
                    node.delete_link(host)
                except OSError:
                    pass
                raise
        finally:
            pod.close()
            node.close()
    finally:
        os.close(podfd)
    return _merge_prev(conf, result)


def _wire(conf, node: Netlink, pod: Netlink, podfd: int, host: str, cid: str, netns: str,
          ifname: str, addrs: list[PodAddress]) -> dict:
    alias = host_veth_alias(conf.name, cid, ifname)
    bridge = None
    v4 = next((a for a in addrs if a.version == 4), None)
    v6 = next((a for a in addrs if a.version == 6), None)
    try:
        stale = node.link(host)
        if stale is not None:  # left over from an attachment whose pod side is gone
            if (stale.get("alias") or "").startswith(ALIAS_PREFIX + " "):
                node.delete_link(host)
            else:
                raise CNIError(INTERFACE_EXISTS, f"node interface {host} exists and is not ours",
                               f"alias {stale.get('alias')!r}")
        if conf.mode == "bridge":
            from . import bridged

            first, more = addrs[0], [(a.ip, a.gateway) for a in addrs[1:]]
            bridge, h, p = bridged.wire(conf, node, pod, podfd, host, alias, ifname, first.ip, first.gateway,
                                        **({"more": more} if more else {}))
            return _result(conf, netns, ifname, addrs, h, p, bridge)
        node.do(nl.veth(host, ifname, peer_netns_fd=podfd, mtu=conf.mtu, what=f"add veth {host}/{ifname}"))
        h = node.link(host)
        if v6 is not None:  # before it is up: its link-local must not be tentative (see _no_dad)
            _no_dad(host)
        node_side = [nl.set_link(h["index"], up=True, alias=alias, what=f"bring up {host}")]
        if v4 is not None:
            lo = node.link("lo")
            node_side += [nl.route(f"{v4.ip}/32", oif=h["index"], replace=True),
                          *([] if lo["flags"] & IFF_UP else [nl.set_link(lo["index"], up=True, what="bring up lo")]),
                          nl.address(lo["index"], v4.gateway, 32, exist_ok=True)]
        if v6 is not None:  # the gateway on the veth itself: NDP answers only for the interface's own addresses
            node_side += [nl.address(h["index"], v6.gateway, 128, nodad=True, exist_ok=True),
                          nl.route(f"{v6.ip}/128", oif=h["index"], replace=True)]
        node.do(*node_side)
        for a in addrs:
            _enable_forwarding(a.version)

        p = pod.link(ifname)
        plo = pod.link("lo")
        if v6 is not None:  # before the link is up: no router solicitation, no RA taken, no DAD
            _pod_sysctls(podfd, {f"net/ipv6/conf/{ifname}/accept_ra": "0",
                                 f"net/ipv6/conf/{ifname}/accept_dad": "0"})
        pod_side = [nl.address(p["index"], a.ip, 32 if a.version == 4 else 128, nodad=True) for a in addrs]
        pod_side += [nl.set_link(p["index"], up=True, what=f"bring up {ifname}"),
                     *([] if plo is None or plo["flags"] & IFF_UP else [nl.set_link(plo["index"], up=True,
                                                                                  what="bring up lo")])]
        for a in addrs:  # in this order: the default route needs the link route to its gateway
            pod_side += [nl.route(a.gateway, oif=p["index"], replace=True),
                         nl.route("default", gateway=a.gateway, oif=p["index"], replace=True)]
        gateways = {a.version: a.gateway for a in addrs}
        pod_side += [nl.route(str(r.dst), gateway=str(r.gw or gateways[r.version]), oif=p["index"], replace=True)
                     for r in conf.routes]
        pod.do(*pod_side)
    except NetlinkError as e:
        raise _nl_error(e, f"ADD {cid}/{ifname}") from e
    return _result(conf, netns, ifname, addrs, h, p, bridge)


def _result(conf, netns: str, ifname: str, addrs: list[PodAddress], h: dict, p: dict,
            bridge: dict | None) -> dict:
    """The ADD result: [bridge,] node veth, pod interface; the pod's addresses (one per family, the
    config's order), their gateways, a default route per family and ipam.routes."""
    iface_host = {"name": h["name"], "mac": h["mac"]}
    iface_pod = {"name": ifname, "mac": p["mac"], "sandbox": netns}
    if conf.mtu and cfg.version_tuple(conf.cni_version) >= (1, 1, 0):
        iface_host["mtu"] = conf.mtu
        iface_pod["mtu"] = conf.mtu
    ifaces = [iface_host, iface_pod]
    if bridge is not None:  # as the reference bridge plugin reports it: the bridge first
        ifaces.insert(0, {"name": bridge["name"], "mac": bridge["mac"]})
    legacy = cfg.version_tuple(conf.cni_version) < (1, 0, 0)
    ips = []
    for a in addrs:
        plen = a.pool.subnet.prefixlen if bridge is not None else (32 if a.version == 4 else 128)
        ipc = {"address": f"{a.ip}/{plen}", "gateway": a.gateway, "interface": len(ifaces) - 1}
        ips.append({"version": str(a.version), **ipc} if legacy else ipc)
    gateways = {a.version: a.gateway for a in addrs}
    routes = [{"dst": "0.0.0.0/0" if a.version == 4 else "::/0", "gw": a.gateway} for a in addrs]
    routes += [{"dst": str(r.dst), "gw": str(r.gw or gateways[r.version])} for r in conf.routes]
    result = {
        "cniVersion": conf.cni_version,
        "interfaces": ifaces,
        "ips": ips,
        "routes": routes,
        "dns": dict(conf.dns or {}),
    }
    return result


def _merge_prev(conf: cfg.NetConf, result: dict) -> dict:
    """Chained after another plugin: append ours to its prevResult (spec: pass it on)."""
    prev = conf.prev_result
    if not prev:
        return result
    base = len(prev.get("interfaces") or [])
    out = {
        "cniVersion": conf.cni_version,
        "interfaces": list(prev.get("interfaces") or []) + result["interfaces"],
        "ips": list(prev.get("ips") or []) + [dict(i, interface=i["interface"] + base)
                                              for i in result["ips"]],
        "routes": list(prev.get("routes") or []) + result["routes"],
        "dns": prev.get("dns") or result["dns"],
    }
    return out


FORWARDING = {4: "net/ipv4/ip_forward", 6: "net/ipv6/conf/all/forwarding"}


def _sysctl(key: str, value: str, where: str = "on the node") -> None:
    """/proc/sys/`key` = `value` in the calling thread's namespace (written only when it differs)."""
    path = f"/proc/sys/{key}"
    try:
        with open(path) as f:
            if f.read().strip() == value:
                return
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        raise CNIError(IO_FAILURE, f"cannot set {key.replace('/', '.')}={value} {where}", str(e)) from e


def _enable_forwarding(version: int = 4) -> None:
    _sysctl(FORWARDING[version], "1")


def _no_dad(host: str) -> None:
    """accept_dad=0 on the node's veth, before it is up. A node forwarding to a pod solicits the pod's
    address from the veth's link-local address, and sends no solicitation at all while that address is
    tentative (the second or so of DAD): a pod's first packets from other pods would be lost."""
    _sysctl(f"net/ipv6/conf/{host}/accept_dad", "0")


def _pod_sysctls(podfd: int, values: dict[str, str]) -> None:
    """Set sysctls in the pod's namespace: /proc/sys/net is the calling thread's namespace's, so this
    thread steps in (setns) and back out."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        nl.setns(podfd)
        try:
            for key, value in values.items():
                _sysctl(key, value, "in the pod")
        finally:
            nl.setns(own)
    except OSError as e:
        raise CNIError(IO_FAILURE, "cannot enter the pod's network namespace", str(e)) from e
    finally:
        os.close(own)


def cmd_del(conf: cfg.NetConf, cid: str, netns: str | None, ifname: str) -> None:
    """Release the lease and remove the veth pair; succeed if already gone."""
    with Store(conf.data_dir, conf.lock_timeout) as store:
        store.release(cid, ifname)
    host = host_veth_name(cid, ifname)
    try:
        with Netlink() as node:
            link = node.link(host)
            if link is not None and (link.get("alias") or "").startswith(ALIAS_PREFIX + " "):
                node.delete_link(host)
    except NetlinkError as e:
        if e.errno not in (errno.ENODEV, errno.ENOENT):
            raise _nl_error(e, f"DEL {cid}/{ifname}") from e


def cmd_check(conf: cfg.NetConf, cid: str, netns: str, ifname: str) -> None:
    prev = conf.prev_result
    if not prev:
        raise CNIError(INVALID_CONFIG, "CHECK needs prevResult",
                       "the runtime passes the ADD result as prevResult")
    ifaces = prev.get("interfaces") or []
    idx = next((i for i, it in enumerate(ifaces)
                if isinstance(it, dict) and it.get("name") == ifname and it.get("sandbox")), None)
    if idx is None:
        raise CHECK_ERR(f"prevResult has no interface {ifname} with a sandbox")
    want = [str(i.get("address", "")).split("/")[0] for i in (prev.get("ips") or [])
            if isinstance(i, dict) and i.get("interface") == idx]
    if not want:
        raise CHECK_ERR(f"prevResult has no IP for interface {ifname}")
    podfd = _open_netns(netns, "CHECK")
    try:
        with _pod_netlink(podfd) as pod:
            p = pod.link(ifname)
            if p is None:
                raise CHECK_ERR(f"interface {ifname} is missing in {netns}")
            if not p["flags"] & IFF_UP:
                raise CHECK_ERR(f"interface {ifname} in {netns} is down")
            if ifaces[idx].get("mac") and ifaces[idx]["mac"].lower() != p["mac"]:
                raise CHECK_ERR(f"interface {ifname} has MAC {p['mac']}, "
                                f"prevResult says {ifaces[idx]['mac']}")
            families = sorted({6 if ":" in ip else 4 for ip in want})
            both = 0 if len(families) > 1 else families[0]  # one dump of the family, or of both
            have = {a["address"] for a in pod.addresses(both) if a["index"] == p["index"]}
            for ip in want:
                if ip not in have:
                    raise CHECK_ERR(f"interface {ifname} lacks address {ip}")
            routes = pod.routes(both)
            for fam in families:
                if not any(r["prefixlen"] == 0 and r["oif"] == p["index"] and (":" in r["dst"]) == (fam == 6)
                           for r in routes):
                    raise CHECK_ERR(f"no {cfg.FAMILY_NAMES[fam]} default route via {ifname} in {netns}")
    except NetlinkError as e:
        raise _nl_error(e, "CHECK") from e
    finally:
        os.close(podfd)
    host = host_veth_name(cid, ifname)
    with Netlink() as node:
        if conf.mode == "bridge":
            from . import bridged

            problem = bridged.check_node(conf, node, host)
            if problem:
                raise CHECK_ERR(problem)
            h, want_routes = None, False
        else:
            h, want_routes = node.link(host), True
            if h is None:
                raise CHECK_ERR(f"node-side interface {host} is missing")
        routes = node.routes(both) if want_routes else []
        for ip in want if want_routes else ():
            plen = 128 if ":" in ip else 32
            if not any(r["dst"] == ip and r["prefixlen"] == plen and r["oif"] == h["index"]
                       for r in routes):
                raise CHECK_ERR(f"node has no route {ip}/{plen} dev {host}")
        gateways6 = {str(i.get("gateway")) for i in prev.get("ips") or []
                     if isinstance(i, dict) and i.get("interface") == idx and ":" in str(i.get("gateway"))}
        if want_routes and gateways6:  # ptp: the pods' IPv6 gateway is an address of their own host veth
            missing = gateways6 - {a["address"] for a in node.addresses(6) if a["index"] == h["index"]}
            if missing:
                raise CHECK_ERR(f"node-side interface {host} lacks the gateway address {min(missing)}")
    store = Store(conf.data_dir, conf.lock_timeout)
    leases = store.find(cid, ifname)
    for ip in want:
        if ip not in leases:
            raise CHECK_ERR(f"no IPAM lease for {ip} held by {cid}/{ifname} in {conf.data_dir}")


def CHECK_ERR(msg: str) -> CNIError:
    return CNIError(CHECK_FAILED, f"CHECK failed: {msg}")


def cmd_status(conf: cfg.NetConf) -> None:
    try:
        with Store(conf.data_dir, conf.lock_timeout) as store:
            leased = list(store.leases())
    except CNIError as e:
        raise CNIError(NOT_AVAILABLE, f"plugin not available: {e.msg}", e.details) from None
    for pool in conf.pools:  # full in any family: an ADD, which takes one of each, would fail
        used = len(leased) if len(conf.pools) == 1 else sum(ip in pool.subnet for ip in leased)
        if used >= pool.size():
            raise CNIError(NOT_AVAILABLE, "plugin not available: IP address pool exhausted",
                           f"{used} of {pool.size()} addresses in {pool.subnet} leased")


def cmd_gc(conf: cfg.NetConf) -> None:
    valid = set(conf.valid_attachments or [])
    with Store(conf.data_dir, conf.lock_timeout) as store:
        store.gc(valid)
    keep = {host_veth_name(cid, ifn) for cid, ifn in valid}
    prefix = f"{ALIAS_PREFIX} {conf.name} "
    try:
        with Netlink() as node:
            for link in node.links():
                if (link.get("alias") or "").startswith(prefix) and link["name"] not in keep:
                    node.delete_link(link["name"])
    except NetlinkError as e:
        raise _nl_error(e, "GC") from e
