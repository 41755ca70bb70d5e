"""labkit-cni's bridge mode: the kubenet / reference `bridge` plugin model.

Beside the routed ptp mode (plugin.py), pods of a node share one Linux bridge:

    node:  cni0 (bridge) up, <gateway>/<podCIDR len>   (created by the first ADD; kept, as the reference plugin does)
           veth<8 hex> master cni0, up, hairpin on, alias "labkit-cni <network> <ifname> <container id>"
           net.ipv4.ip_forward=1, net.bridge.bridge-nf-call-iptables=1 (where the kernel has br_netfilter)
      v6:  cni0 also holds <gateway6>/<IPv6 podCIDR len> nodad; net.ipv6.conf.all.forwarding=1,
           net.bridge.bridge-nf-call-ip6tables=1
    pod:   <ifname> <pod ip>/<podCIDR len> up, lo up
           route default via <gateway> dev <ifname>   (+ ipam.routes)
      v6:  <pod ip6>/<IPv6 podCIDR len> nodad, route default via <gateway6> dev <ifname>

Per address family the config has a range set of (IPv4, IPv6 or both, one address of each): the
first family's address and gateway, then `more` (the others', the config's order). `nodad` on the
IPv6 addresses makes them usable the moment ADD returns (never `tentative`).

Pods of one node reach each other at layer 2 through the bridge (ARP, MAC learning:
`bridge fdb`); everything else goes to the gateway on cni0 and is routed by the node,
so the inter-node backends (host-gw routes, the vxlan device) work unchanged. Hairpin
mode lets a frame leave by the port it came in on: a pod reaching itself through its
Service. br_netfilter (`bridge-nf-call-iptables`) makes bridged pod-to-pod traffic pass
the node's `ip`/`inet` forward hook, so NetworkPolicy rules keyed on addresses see it,
as kubenet requires of the kubelet.

Standard library only: imported on the `labkit-cni` exec path.
"""

from __future__ import annotations

import errno
import os

from labkit.net import netlink as nl
from labkit.net.netlink import IFF_UP, Netlink

from .errors import INTERFACE_EXISTS, IO_FAILURE, CNIError

BR_NF_CALL_IPTABLES = "/proc/sys/net/bridge/bridge-nf-call-iptables"
BR_NF_CALL_IP6TABLES = "/proc/sys/net/bridge/bridge-nf-call-ip6tables"
IPV6_FORWARDING = "/proc/sys/net/ipv6/conf/all/forwarding"


def _v6(ip: str) -> bool:
    return ":" in ip


def bridge_mac(gateway: str) -> str:
    """A stable, locally administered MAC for the bridge: 0e:62 and the gateway's four bytes (IPv6: the last
    two of its /64 prefix, which tell the nodes apart, and its last two)."""
    if _v6(gateway):
        import _socket  # the C module, as labkit.net.netlink: cheap on the exec path

        packed = _socket.inet_pton(_socket.AF_INET6, gateway)
        return "0e:62:" + ":".join(f"{b:02x}" for b in packed[6:8] + packed[-2:])
    return "0e:62:" + ":".join(f"{int(b):02x}" for b in gateway.split("."))


def _pools(conf) -> list:
    """The config's pools, one per address family (`pools`), or its one `pool`."""
    return list(getattr(conf, "pools", None) or [conf.pool])


def prefixlen_of(conf, ip: str) -> int:
    """The podCIDR length of `ip`'s family (the pool of that family)."""
    for pool in _pools(conf):
        if _v6(str(pool.gateway)) == _v6(ip):
            return pool.subnet.prefixlen
    raise ValueError(f"no IPv{6 if _v6(ip) else 4} range set for {ip}")


def ensure_bridge(conf, node: Netlink, gw: str, more: list[str] | tuple[str, ...] = ()) -> dict:
    """The node's bridge, up and holding the gateway address (and `more`: the other families' gateways):
    created if missing, idempotent under races."""
    name, prefixlen = conf.bridge, prefixlen_of(conf, gw)
    br = node.link(name)
    if br is None:
        # a MAC of its own: else the bridge takes its lowest port's, and pods' ARP entries for the
        # gateway go stale whenever that pod leaves
        req = nl.bridge(name, mac=bridge_mac(gw))
        req.tolerate = (errno.EEXIST,)  # another ADD made it first
        node.do(req)
        br = node.link(name)
    if br is None or br.get("kind") != "bridge":
        raise CNIError(INTERFACE_EXISTS, f"node interface {name} exists and is not a bridge",
                       f"kind {br.get('kind') if br else None!r}; name another with \"bridge\"")
    node.do(nl.address(br["index"], gw, prefixlen, exist_ok=True, nodad=True, what=f"add {gw}/{prefixlen} to {name}"),
            *[nl.address(br["index"], g, prefixlen_of(conf, g), exist_ok=True, nodad=True,
                         what=f"add {g}/{prefixlen_of(conf, g)} to {name}") for g in more],
            *([] if br["flags"] & IFF_UP else [nl.set_link(br["index"], up=True, what=f"bring up {name}")]))
    return br


def _set_sysctl(path: str, what: str, missing_ok: bool, value: str = "1") -> None:
    """Write `value` to /proc/sys/... in the node (the calling thread's namespace) unless it holds it already."""
    try:
        with open(path) as f:
            if f.read().strip() == value:
                return
        with open(path, "w") as f:
            f.write(value)
    except FileNotFoundError:
        if missing_ok:
            return
        raise CNIError(IO_FAILURE, f"cannot set {what} on the node", f"no {path}") from None
    except OSError as e:
        raise CNIError(IO_FAILURE, f"cannot set {what} on the node", str(e)) from e


def enable_bridge_netfilter(ipv6: bool = False) -> None:
    """Bridged IPv4 (and with `ipv6`, IPv6) traffic through the node's ip/ip6/inet hooks (per network
    namespace); absent br_netfilter: no-op."""
    _set_sysctl(BR_NF_CALL_IPTABLES, "net.bridge.bridge-nf-call-iptables", missing_ok=True)
    if ipv6:
        _set_sysctl(BR_NF_CALL_IP6TABLES, "net.bridge.bridge-nf-call-ip6tables", missing_ok=True)


def _pod_sysctls(podfd: int, values: dict[str, str]) -> None:
    """Write /proc/sys/<key> in the pod's namespace: /proc/sys/net is the calling thread's namespace's, so
    this thread steps in (setns) and back out (as plugin.py does for ptp pods)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    key = ""
    try:
        nl.setns(podfd)
        try:
            for key, value in values.items():
                with open(f"/proc/sys/{key}", "w") as f:
                    f.write(value)
        finally:
            nl.setns(own)
    except OSError as e:
        raise CNIError(IO_FAILURE, f"cannot set {key.replace('/', '.')} in the pod", str(e)) from e
    finally:
        os.close(own)


def wire(conf, node: Netlink, pod: Netlink, podfd: int, host: str, alias: str, ifname: str, ip: str,
         gw: str, more: list[tuple[str, str]] | tuple[tuple[str, str], ...] = ()) -> tuple[dict, dict, dict]:
    """Bridge-mode ADD's links and addresses: `ip` and `gw` of the first family, `more` (ip, gateway)
    of the others; returns (bridge, host veth, pod interface) as Netlink.link gives them."""
    ipv6 = any(_v6(a) for a, _ in ((ip, gw), *more))
    if ipv6:
        _set_sysctl(IPV6_FORWARDING, "net.ipv6.conf.all.forwarding", missing_ok=False)
    br = ensure_bridge(conf, node, gw, [g for _, g in more])
    if ipv6:
        # The node solicits its pods' addresses from the bridge's link-local address, and sends no
        # solicitation while that is tentative: no DAD on it. A bridge without ports has no carrier and so
        # no link-local yet: set before the first port joins, this holds from its first address on.
        _set_sysctl(f"/proc/sys/net/ipv6/conf/{conf.bridge}/accept_dad", "accept_dad on the bridge",
                    missing_ok=False, value="0")
    node.do(nl.veth(host, ifname, peer_netns_fd=podfd, mtu=conf.mtu, what=f"add veth {host}/{ifname}"))
    h = node.link(host)
    node.do(nl.set_link(h["index"], master=br["index"], up=True, alias=alias, what=f"attach {host} to {conf.bridge}"),
            nl.bridge_port(h["index"], hairpin=conf.hairpin))
    enable_bridge_netfilter(ipv6)
    p = pod.link(ifname)
    plo = pod.link("lo")
    if ipv6:  # before the pod's link is up: no router solicitation, no RA taken, no DAD (as in ptp mode)
        _pod_sysctls(podfd, {f"net/ipv6/conf/{ifname}/accept_ra": "0", f"net/ipv6/conf/{ifname}/accept_dad": "0"})
    pairs = [(ip, gw), *more]
    gateways = {_v6(g): g for _, g in pairs}
    pod.do(*[nl.address(p["index"], a, prefixlen_of(conf, a), nodad=True) for a, _ in pairs],
           nl.set_link(p["index"], up=True, what=f"bring up {ifname}"),
           *([] if plo is None or plo["flags"] & IFF_UP else [nl.set_link(plo["index"], up=True, what="bring up lo")]),
           *[nl.route("default", gateway=g, oif=p["index"], replace=True) for _, g in pairs],
           *[nl.route(str(r.dst), gateway=str(r.gw or gateways[_v6(str(r.dst))]), oif=p["index"], replace=True)
             for r in conf.routes if _v6(str(r.dst)) in gateways])
    return node.link(conf.bridge), h, p


def check_node(conf, node: Netlink, host: str) -> str | None:
    """Bridge-mode CHECK on the node: what is wrong, or None."""
    h = node.link(host)
    if h is None:
        return f"node-side interface {host} is missing"
    br = node.link(conf.bridge)
    if br is None or br.get("kind") != "bridge":
        return f"node has no bridge {conf.bridge}"
    if h.get("master") != br["index"]:
        return f"node-side interface {host} is not a port of {conf.bridge}"
    if conf.pool is None:
        return None
    gateways = [str(pool.gateway) for pool in _pools(conf)]
    held = {a["address"] for a in node.addresses(6 if all(map(_v6, gateways)) else 0 if any(map(_v6, gateways))
                                                 else 4) if a["index"] == br["index"]}
    for gw in gateways:
        if gw not in held:
            return f"bridge {conf.bridge} lacks the gateway address {gw}"
    return None
