"""Forget UDP flows to endpoints that are gone, as kube-proxy does.

A UDP "connection" lives in conntrack until it idles out; while it lives, its
packets keep the DNAT chosen for the first one, so a client that reuses its
source port (a resolver, a metrics agent) would keep talking to a removed
endpoint. TCP needs nothing: its connections to a gone pod fail and are redone.
"""

from __future__ import annotations

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
    """Delete the namespace's UDP conntrack entries whose replies come from `endpoints`.

    Returns how many entries were deleted.
    """
    targets = set(endpoints)
    if not targets:
        return 0

    def work() -> int:
        from pyroute2 import NFCTSocket  # costly import: only when there is something to clear
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

        deleted = 0
        with NFCTSocket() as ct:
            for entry in list(ct.dump()):
                orig = _tuple(entry.get_attr("CTA_TUPLE_ORIG"))
                reply = _tuple(entry.get_attr("CTA_TUPLE_REPLY"))
                if orig is None or reply is None or orig[2] != socket.IPPROTO_UDP:
                    continue
                if (reply[0], reply[3]) not in targets:
                    continue
                saddr, daddr, proto, sport, dport = orig
                try:
                    ct.entry("del", tuple_orig=NFCTAttrTuple(
                        saddr=saddr, daddr=daddr, proto=proto, sport=sport, dport=dport,
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
    return (
        ip.get_attr("CTA_IP_V4_SRC"),
        ip.get_attr("CTA_IP_V4_DST"),
        proto.get_attr("CTA_PROTO_NUM"),
        proto.get_attr("CTA_PROTO_SRC_PORT"),
        proto.get_attr("CTA_PROTO_DST_PORT"),
    )
