"""Forget UDP flows to endpoints that are gone, as kube-proxy does (both address families).

A UDP "connection" lives in conntrack until it idles out; while it lives, its
packets keep the DNAT chosen for the first one, so a client that reuses its
source port (a resolver, a metrics agent) would keep talking to a removed
endpoint. TCP needs nothing: its connections to a gone pod fail and are redone.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence

from labkit.net.netns import run_in_netns
from labkit.proxy.views import ServiceView


def udp_endpoints(services: Sequence[ServiceView]) -> set[tuple[str, int]]:
    return {
        (ep.ip, ep.port)
        for svc in services
        for port in svc.ports
        if port.protocol == "UDP"
        for ep in port.endpoints
    }


def stale_udp_endpoints(before: Sequence[ServiceView], after: Sequence[ServiceView]) -> set[tuple[str, int]]:
    """UDP endpoints (ip, port) that served a service before and serve none now."""
    return udp_endpoints(before) - udp_endpoints(after)


def clear_udp_flows(netns_path: str | None, endpoints: Iterable[tuple[str, int]]) -> int:
    """Delete the namespace's UDP conntrack entries whose replies come from `endpoints` (IPv4 or IPv6).

    Returns how many entries were deleted.
    """
    targets = {(ipaddress.ip_address(ip), port) for ip, port in endpoints}
    if not targets:
        return 0
    families = sorted({ip.version for ip, _ in targets})

    def work() -> int:
        from pyroute2 import NFCTSocket  # costly import: only when there is something to clear
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

        deleted = 0
        for version in families:  # the kernel dumps and deletes one l3 family per request
            family = socket.AF_INET if version == 4 else socket.AF_INET6
            with NFCTSocket(nfgen_family=family) as ct:
                for entry in list(ct.dump()):
                    orig = _tuple(entry.get_attr("CTA_TUPLE_ORIG"))
                    reply = _tuple(entry.get_attr("CTA_TUPLE_REPLY"))
                    if orig is None or reply is None or orig[2] != socket.IPPROTO_UDP:
                        continue
                    if (ipaddress.ip_address(reply[0]), reply[3]) not in targets:
                        continue
                    saddr, daddr, proto, sport, dport = orig
                    try:
                        ct.entry("del", tuple_orig=NFCTAttrTuple(
                            family=family, saddr=saddr, daddr=daddr, proto=proto, sport=sport, dport=dport,
                        ))
                        deleted += 1
                    except OSError:
                        pass  # it idled out meanwhile
        return deleted

    return run_in_netns(netns_path, work)


def _tuple(attr) -> tuple[str, str, int, int, int] | None:
    if attr is None:
        return None
    ip = attr.get_attr("CTA_TUPLE_IP")
    proto = attr.get_attr("CTA_TUPLE_PROTO")
    if ip is None or proto is None:
        return None
    v4 = ip.get_attr("CTA_IP_V4_SRC") is not None
    return (
        ip.get_attr("CTA_IP_V4_SRC" if v4 else "CTA_IP_V6_SRC"),
        ip.get_attr("CTA_IP_V4_DST" if v4 else "CTA_IP_V6_DST"),
        proto.get_attr("CTA_PROTO_NUM"),
        proto.get_attr("CTA_PROTO_SRC_PORT"),
        proto.get_attr("CTA_PROTO_DST_PORT"),
    )
