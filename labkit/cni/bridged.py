"""labkit-cni's bridge mode: the kubenet / reference `bridge` plugin model.

Beside the routed ptp mode (plugin.py), pods of a node share one Linux bridge:

    node:  cni0 (bridge) up, <gateway>/<podCIDR len>   (created by the first ADD; kept, as the reference plugin does)
           veth<8 hex> master cni0, up, hairpin on, alias "labkit-cni <network> <ifname> <container id>"
           net.ipv4.ip_forward=1, net.bridge.bridge-nf-call-iptables=1 (where the kernel has br_netfilter)
    pod:   <ifname> <pod ip>/<podCIDR len> up, lo up
           route default via <gateway> dev <ifname>   (+ ipam.routes)

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

from labkit.net import netlink as nl
from labkit.net.netlink import IFF_UP, Netlink

from .errors import INTERFACE_EXISTS, IO_FAILURE, CNIError

BR_NF_CALL_IPTABLES = "/proc/sys/net/bridge/bridge-nf-call-iptables"


def bridge_mac(gateway: str) -> str:
    """A stable, locally administered MAC for the bridge: 0e:62 and the gateway's four bytes."""
    return "0e:62:" + ":".join(f"{int(b):02x}" for b in gateway.split("."))


def ensure_bridge(conf, node: Netlink, gw: str) -> dict:
    """The node's bridge, up and holding the gateway address: created if missing, idempotent under races."""
    name, prefixlen = conf.bridge, conf.pool.subnet.prefixlen
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
    node.do(nl.address(br["index"], gw, prefixlen, exist_ok=True, what=f"add {gw}/{prefixlen} to {name}"),
            *([] if br["flags"] & IFF_UP else [nl.set_link(br["index"], up=True, what=f"bring up {name}")]))
    return br


def enable_bridge_netfilter() -> None:
    """Bridged IPv4 traffic through the node's ip/inet hooks (per network namespace); absent br_netfilter: no-op."""
    try:
        with open(BR_NF_CALL_IPTABLES) as f:
            if f.read().strip() == "1":
                return
        with open(BR_NF_CALL_IPTABLES, "w") as f:
            f.write("1")
    except FileNotFoundError:
        return
    except OSError as e:
        raise CNIError(IO_FAILURE, "cannot set net.bridge.bridge-nf-call-iptables on the node", str(e)) from e


def wire(conf, node: Netlink, pod: Netlink, podfd: int, host: str, alias: str, ifname: str, ip: str,
         gw: str) -> tuple[dict, dict, dict]:
    """Bridge-mode ADD's links and addresses; returns (bridge, host veth, pod interface) as Netlink.link gives them."""
    br = ensure_bridge(conf, node, gw)
    node.do(nl.veth(host, ifname, peer_netns_fd=podfd, mtu=conf.mtu, what=f"add veth {host}/{ifname}"))
    h = node.link(host)
    node.do(nl.set_link(h["index"], master=br["index"], up=True, alias=alias, what=f"attach {host} to {conf.bridge}"),
            nl.bridge_port(h["index"], hairpin=conf.hairpin))
    enable_bridge_netfilter()
    p = pod.link(ifname)
    plo = pod.link("lo")
    plen = conf.pool.subnet.prefixlen
    pod.do(nl.address(p["index"], ip, plen),
           nl.set_link(p["index"], up=True, what=f"bring up {ifname}"),
           *([] if plo is None or plo["flags"] & IFF_UP else [nl.set_link(plo["index"], up=True, what="bring up lo")]),
           nl.route("default", gateway=gw, oif=p["index"], replace=True),
           *[nl.route(str(r.dst), gateway=str(r.gw or gw), oif=p["index"], replace=True) for r in conf.routes])
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
    gw = str(conf.pool.gateway)
    if not any(a["index"] == br["index"] and a["address"] == gw for a in node.addresses()):
        return f"bridge {conf.bridge} lacks the gateway address {gw}"
    return None
