"""`labkit events`: what changes in a running lab, as it happens: interfaces up and down, addresses and
routes added and removed in every node's and pod's namespace, pods started and stopped.

How: one rtnetlink socket per namespace (labkit.net.netlink, opened after setns into it and joined to the
link, address and route multicast groups of both families) and one thread that select()s over all of them. A
socket stays bound to the namespace it was opened in, so nothing runs inside the namespaces and nothing
is left there: no `ip monitor` process per namespace (each a fork and exec, a process for `down` to
find, and text to parse), and a namespace added later is one socket more. Pods come and go with the
lab's state (`up` and `apply` record them); the watch polls it a few times a second, opens a socket for
each new pod and closes the socket of a pod that is gone. When the lab's state is gone (`down`), the
watch ends.

IPv6 is reported as IPv4 is: a global or ULA address or route added or removed. The kernel's own
link-local addresses and routes (fe80::/10, one per interface that comes up) and multicast routes are
not news, as the local table's routes are not: an IPv4-only lab's events are what they always were.
"""

from __future__ import annotations

import errno
import ipaddress
import select
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from labkit import paths, state
from labkit.errors import LabkitError
from labkit.net import netlink as nl

GROUPS = (nl.RTMGRP_LINK | nl.RTMGRP_IPV4_IFADDR | nl.RTMGRP_IPV4_ROUTE | nl.RTMGRP_IPV6_IFADDR
          | nl.RTMGRP_IPV6_ROUTE)
POLL = 0.25  # seconds between looks at the lab's state (pods, down)
RT_TABLE_LOCAL = 255  # the kernel's own routes for local and broadcast addresses: not news


def _kernel_own(address: str | None) -> bool:
    """An IPv6 link-local or multicast address: the kernel makes these by itself on every interface."""
    if not address or ":" not in address:
        return False
    ip = ipaddress.IPv6Address(address)
    return ip.is_link_local or ip.is_multicast


@dataclass(frozen=True)
class Event:
    """One change: `where` is a node or NS/POD; `kind` link|address|route|pod|lab; `action` what happened."""

    time: float
    lab: str
    where: str
    kind: str
    action: str
    detail: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"time": round(self.time, 6), "lab": self.lab, "where": self.where, "kind": self.kind,
                "action": self.action, **self.detail}

    def text(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.time)) + f".{int(self.time * 1000) % 1000:03d}"
        d = self.detail
        if self.kind == "link":
            what = f"{d['interface']} {self.action}" + (f" ({d['link_kind']})" if d.get("link_kind") else "")
        elif self.kind == "address":
            what = f"address {self.action} {d['address']} dev {d['interface']}"
        elif self.kind == "route":
            via = f" via {d['gateway']}" if d.get("gateway") else ""
            dev = f" dev {d['interface']}" if d.get("interface") else ""
            what = f"route {self.action} {d['dst']}{via}{dev}"
        elif self.kind == "pod":
            what = f"pod {self.action}" + (f" on {d['node']}" if d.get("node") else "") + \
                (f" ip {d['ip']}" if d.get("ip") else "")
        else:
            what = f"lab {self.action}"
        return f"{stamp} {self.where:<20} {what}"


def link_state(flags: int) -> str:
    """down (set down), no-carrier (up, its other end down), up."""
    if not flags & nl.IFF_UP:
        return "down"
    return "up" if flags & nl.IFF_LOWER_UP else "no-carrier"


class _Watched:
    """One namespace under watch: its socket and the interfaces it has (index -> name, state)."""

    def __init__(self, name: str, path: str):
        self.name, self.path = name, path
        with nl.Netlink.in_netns(path) as sock:
            self.links = {link["index"]: (link["name"], link_state(link["flags"])) for link in sock.links()}
        self.sock = nl.Netlink.in_netns(path, GROUPS)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def events(self, lab: str) -> Iterator[Event]:
        now = time.time()
        for rtype, payload in self.sock.receive():
            try:
                decoded = list(self._decode(lab, now, rtype, payload))
            except (OSError, ValueError, KeyError):  # a message the decoder cannot read: not worth ending the watch
                continue
            yield from decoded

    def _decode(self, lab: str, now: float, rtype: int, payload: bytes) -> Iterator[Event]:
        if rtype in (nl.RTM_NEWLINK, nl.RTM_DELLINK):
            link = nl.link_info(payload)
            known = self.links.get(link["index"])
            if rtype == nl.RTM_DELLINK:
                self.links.pop(link["index"], None)
                yield Event(now, lab, self.name, "link", "removed", {"interface": link["name"]})
                return
            current = link_state(link["flags"])
            self.links[link["index"]] = (link["name"], current)
            if known is None:
                yield Event(now, lab, self.name, "link", "added",
                            {"interface": link["name"], "link_kind": link["kind"], "state": current})
            elif known[1] != current:
                yield Event(now, lab, self.name, "link", current, {"interface": link["name"]})
        elif rtype in (nl.RTM_NEWADDR, nl.RTM_DELADDR):
            addr = nl.address_info(payload)
            if addr["address"] is None or _kernel_own(addr["address"]):
                return
            yield Event(now, lab, self.name, "address", "added" if rtype == nl.RTM_NEWADDR else "removed",
                        {"address": f"{addr['address']}/{addr['prefixlen']}", "interface": self._name(addr["index"])})
        elif rtype in (nl.RTM_NEWROUTE, nl.RTM_DELROUTE):
            route = nl.route_info(payload)
            if route["table"] == RT_TABLE_LOCAL or (route["prefixlen"] and _kernel_own(route["dst"])):
                return
            dst = "default" if route["prefixlen"] == 0 else f"{route['dst']}/{route['prefixlen']}"
            yield Event(now, lab, self.name, "route", "added" if rtype == nl.RTM_NEWROUTE else "removed",
                        {"dst": dst, "gateway": route["gateway"],
                         "interface": self._name(route["oif"]) if route["oif"] else None,
                         **({"table": route["table"]} if route["table"] != nl.RT_TABLE_MAIN else {})})

    def _name(self, index: int) -> str:
        return self.links.get(index, (f"if{index}", ""))[0]


def _summary(lab: str) -> dict[str, Any] | None:
    recorded = state.read(lab)
    summary = (recorded or {}).get("summary")
    return summary if isinstance(summary, dict) else None


def _namespaces(summary: Mapping[str, Any]) -> dict[str, str]:
    found = {n["name"]: n["netns_path"] for n in summary.get("nodes", []) if n.get("netns_path")}
    found.update({f"{p['namespace']}/{p['name']}": p["netns_path"] for p in summary.get("pods", [])
                  if p.get("netns_path")})
    return found


def _pods(summary: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {f"{p['namespace']}/{p['name']}": p for p in summary.get("pods", [])}


def watch(lab: str, emit: Callable[[Event], None], stopped: Callable[[], bool] = lambda: False,
          ready: Callable[[list[str]], None] = lambda names: None) -> None:
    """Call emit(event) for every change in `lab` until stopped() is true or the lab goes down;
    ready(names) once every namespace's socket is open (what is watched from then on)."""
    paths.check_lab_name(lab, "lab")
    summary = _summary(lab)
    if summary is None:
        raise LabkitError(f"no lab named {lab!r} is up")
    watched: dict[str, _Watched] = {}
    pods = _pods(summary)
    try:
        _follow(lab, summary, watched)
        ready(sorted(watched))
        next_look = time.monotonic() + POLL
        while not stopped():
            poller = select.poll()  # not select(): a lab of a thousand pods has more sockets than FD_SETSIZE
            by_fd = {item.fileno(): item for item in watched.values()}
            for fd in by_fd:
                poller.register(fd, select.POLLIN)
            for fd, _ in poller.poll(POLL * 1000):
                item = by_fd[fd]
                try:
                    for event in item.events(lab):
                        emit(event)
                except OSError as exc:  # ENOBUFS: the kernel dropped notifications; say so and go on
                    if exc.errno != errno.ENOBUFS:
                        raise
                    emit(Event(time.time(), lab, item.name, "lab", "missed events (receive buffer full)"))
            if time.monotonic() < next_look:  # a busy lab's notifications do not make it re-read its state
                continue
            next_look = time.monotonic() + POLL
            summary = _summary(lab)
            if summary is None:
                emit(Event(time.time(), lab, lab, "lab", "down"))
                return
            now_pods = _pods(summary)
            for key in sorted(set(now_pods) - set(pods)):
                emit(Event(time.time(), lab, key, "pod", "started",
                           {"node": now_pods[key].get("node"), "ip": now_pods[key].get("ip")}))
            for key in sorted(set(pods) - set(now_pods)):
                emit(Event(time.time(), lab, key, "pod", "stopped", {"node": pods[key].get("node")}))
            pods = now_pods
            _follow(lab, summary, watched)
    finally:
        for item in watched.values():
            item.close()


def _follow(lab: str, summary: Mapping[str, Any], watched: dict[str, _Watched]) -> None:
    """A socket for every node and pod namespace of the summary; none for those gone."""
    wanted = _namespaces(summary)
    for name in list(watched):
        if name not in wanted or watched[name].path != wanted[name]:
            watched.pop(name).close()
    for name, path in wanted.items():
        if name not in watched:
            try:
                watched[name] = _Watched(name, path)
            except OSError:  # gone between the state and now (a pod removed, the lab going down)
                continue
