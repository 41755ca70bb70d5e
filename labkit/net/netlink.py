"""rtnetlink, the one way labkit changes links, addresses, routes and neighbours.

Every caller goes through this module: the lab wiring (veths, bridges,
addresses, routes of every node), the CNI backends (host-gw routes, the vxlan
device with its neighbours and FDB entries) and the `labkit-cni` plugin.

Why a hand-written encoder and not pyroute2: `labkit-cni` is exec'd once per
pod and command in a `python -IS` (labkit.lean), where importing pyroute2 costs
~170-200 ms (even its message classes alone pull in tens of modules), against
~10 ms for the whole plugin run. So this module uses only `_socket`, `struct`,
`os` and `errno` (no `socket.py`, `dataclasses`, `re` or `ctypes`: each is
milliseconds on that path), and the messages are built here with `struct`.
That also makes the lab wiring cheaper than pyroute2's classes did, and it
replaces the `ip -batch` / `bridge -batch` subprocesses the backends ran.

Shape: builders (`veth`, `route`, `fdb`, ...) return a `Request`; `Netlink.do`
sends any number of them on one socket, pipelined like `ip -batch`, reads one
ack per request and raises a `NetlinkError` naming the first that failed.
A socket stays bound to the network namespace it was created in, so
`Netlink()` talks to the calling thread's namespace and `Netlink.in_netns`
to another one (the thread setns()es there just to open the socket).
"""

from __future__ import annotations

import _socket as socket  # the C module: `socket.py` costs ~4 ms of imports (enum, selectors)
import errno
import os
import struct

# message types
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH = 28, 29
NLMSG_ERROR, NLMSG_DONE = 2, 3
# multicast groups a monitoring socket joins (labkit.events)
RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE = 0x1, 0x10, 0x40
RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE = 0x100, 0x400
# flags
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLM_F_DUMP = 0x300
# link attributes
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFLA_LINKINFO, IFLA_IFALIAS, IFLA_NET_NS_FD = 18, 20, 28
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA = 4, 5
IFLA_BRPORT_MODE = 4  # the port's hairpin mode (u8)
VETH_INFO_PEER = 1
IFLA_VXLAN_ID, IFLA_VXLAN_LINK, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LEARNING, IFLA_VXLAN_PORT = 1, 3, 4, 7, 15
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000  # carrier: the link's other end is up too
# address / route / neighbour attributes
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
IFA_F_NODAD, IFA_F_TENTATIVE = 0x02, 0x40  # an IPv6 address without duplicate address detection; one still in it
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
NDA_DST, NDA_LLADDR = 1, 2
RT_TABLE_MAIN = 254
RTPROT_BOOT, RTPROT_STATIC = 3, 4
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_HOST, RT_SCOPE_NOWHERE = 0, 253, 254, 255
RTN_UNICAST = 1
RTNH_F_ONLINK = 4
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
AF_BRIDGE = 7
CLONE_NEWNET = 0x40000000

_HDR = struct.Struct("=LHHLL")
_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NDMSG = struct.Struct("=BxxxiHBB")
_RTA = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_AF_OF = {0: 0, 4: socket.AF_INET, 6: socket.AF_INET6}  # AF_UNSPEC (0) dumps every family
_ANY = {socket.AF_INET: "0.0.0.0", socket.AF_INET6: "::"}
_ACK_EVERY = 128  # requests in flight before their acks are read: the socket's receive queue is finite


class NetlinkError(OSError):
    """A kernel NACK: `errno` is the positive errno, `what` says which request failed."""

    def __init__(self, err: int, what: str):
        super().__init__(err, f"{what}: {os.strerror(err)}")
        self.what = what


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, data: bytes) -> bytes:
    ln = 4 + len(data)
    return _RTA.pack(ln, kind) + data + b"\0" * (_align(ln) - ln)


def attr_str(kind: int, s: str) -> bytes:
    return attr(kind, s.encode() + b"\0")


def attr_u32(kind: int, v: int) -> bytes:
    return attr(kind, _U32.pack(v))


def parse_attrs(buf: bytes, off: int = 0) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    n = len(buf)
    while off + 4 <= n:
        ln, kind = _RTA.unpack_from(buf, off)
        if ln < 4:
            break
        out[kind & 0x3FFF] = buf[off + 4 : off + ln]
        off += _align(ln)
    return out


def _mac(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"invalid MAC address {text!r}")
    return bytes(int(p, 16) for p in parts)


def _af(ip: str) -> int:
    """The address family of an address in text: IPv6 addresses are the ones with a ':'."""
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def _pack(family: int, ip: str) -> bytes:
    return socket.inet_pton(family, ip)


def _unpack(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if len(raw) == 16 else socket.AF_INET, raw)


def _prefix(cidr: str, family: int = socket.AF_INET) -> tuple[str, int]:
    """'10.0.0.0/24' -> ('10.0.0.0', 24); 'default' (of `family`) and a bare address too."""
    if cidr == "default":
        return ("::" if family == socket.AF_INET6 else "0.0.0.0"), 0
    address, _, length = cidr.partition("/")
    return address, int(length) if length else (128 if ":" in address else 32)


# ---------------------------------------------------------------------------
# requests


class Request:
    """One rtnetlink message ready to send, with what to call it in an error."""

    __slots__ = ("body", "flags", "mtype", "tolerate", "what")

    def __init__(self, mtype: int, flags: int, body: bytes, what: str, tolerate: tuple[int, ...] = ()):
        self.mtype, self.flags, self.body, self.what, self.tolerate = mtype, flags, body, what, tolerate

    def encode(self, seq: int) -> bytes:
        return _HDR.pack(_HDR.size + len(self.body), self.mtype, self.flags | NLM_F_REQUEST | NLM_F_ACK, seq,
                         0) + self.body


def _ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFO.pack(0, 0, index, flags, change)


def _create(replace: bool) -> int:
    return NLM_F_CREATE | (NLM_F_REPLACE if replace else NLM_F_EXCL)


def veth(name: str, peer: str, *, netns_fd: int | None = None, peer_netns_fd: int | None = None,
         mtu: int | None = None, up: bool = False, what: str = "", index: int = 0) -> Request:
    """`ip link add NAME [netns FD] [index I] type veth peer name PEER [netns FD]`: both ends born in place.

    `up` brings `name`'s end up; the peer cannot be (the kernel configures it before the pair is joined).
    `index` is `name`'s ifindex (0: the kernel's choice).
    """
    common = attr_u32(IFLA_MTU, mtu) if mtu else b""
    peer_attrs = attr_str(IFLA_IFNAME, peer) + common
    if peer_netns_fd is not None:
        peer_attrs += attr_u32(IFLA_NET_NS_FD, peer_netns_fd)
    info = attr_str(IFLA_INFO_KIND, "veth") + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, _ifinfo() + peer_attrs))
    attrs = attr_str(IFLA_IFNAME, name) + common + attr(IFLA_LINKINFO, info)
    if netns_fd is not None:
        attrs += attr_u32(IFLA_NET_NS_FD, netns_fd)
    flags = IFF_UP if up else 0
    return Request(RTM_NEWLINK, _create(False), _ifinfo(index, flags, flags) + attrs,
                   what or f"create veth {name}/{peer}")


MACVLAN_MODES = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8, "source": 16}
IFLA_LINK, IFLA_MACVLAN_MODE = 5, 1


def macvlan(name: str, parent_index: int, *, mode: str = "bridge", netns_fd: int | None = None,
            mtu: int | None = None, what: str = "") -> Request:
    """`ip link add link PARENT name NAME [netns FD] type macvlan mode MODE`: born in its namespace."""
    data = attr_u32(IFLA_MACVLAN_MODE, MACVLAN_MODES[mode])
    attrs = attr_str(IFLA_IFNAME, name) + attr_u32(IFLA_LINK, parent_index)
    if mtu:
        attrs += attr_u32(IFLA_MTU, mtu)
    attrs += attr(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, "macvlan") + attr(IFLA_INFO_DATA, data))
    if netns_fd is not None:
        attrs += attr_u32(IFLA_NET_NS_FD, netns_fd)
    return Request(RTM_NEWLINK, _create(False), _ifinfo() + attrs, what or f"create macvlan {name}")


def bridge(name: str, *, mac: str | None = None) -> Request:
    """`ip link add NAME [address MAC] up type bridge` (a set MAC does not follow its ports' MACs)."""
    attrs = attr_str(IFLA_IFNAME, name) + (attr(IFLA_ADDRESS, _mac(mac)) if mac else b"")
    attrs += attr(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, "bridge"))
    return Request(RTM_NEWLINK, _create(False), _ifinfo(0, IFF_UP, IFF_UP) + attrs, f"create bridge {name}")


def bridge_port(index: int, *, hairpin: bool, what: str = "") -> Request:
    """`ip link set dev #index type bridge_slave hairpin on|off` (the link must already have a bridge master)."""
    data = attr(IFLA_BRPORT_MODE, bytes([int(hairpin)]))
    info = attr_str(IFLA_INFO_SLAVE_KIND, "bridge") + attr(IFLA_INFO_SLAVE_DATA, data)
    return Request(RTM_NEWLINK, 0, _ifinfo(index) + attr(IFLA_LINKINFO, info),
                   what or f"set hairpin {'on' if hairpin else 'off'} on link #{index}")


def vxlan(name: str, *, vni: int, local: str, dev_index: int, port: int, mac: str, learning: bool = False,
          mtu: int | None = None) -> Request:
    """`ip link add NAME address MAC [mtu M] type vxlan id VNI local IP dev DEV dstport PORT [no]learning`."""
    data = (attr_u32(IFLA_VXLAN_ID, vni) + attr_u32(IFLA_VXLAN_LINK, dev_index)
            + attr(IFLA_VXLAN_LOCAL, socket.inet_aton(local)) + attr(IFLA_VXLAN_LEARNING, bytes([int(learning)]))
            + attr(IFLA_VXLAN_PORT, struct.pack("!H", port)))
    attrs = attr_str(IFLA_IFNAME, name) + attr(IFLA_ADDRESS, _mac(mac))
    if mtu:
        attrs += attr_u32(IFLA_MTU, mtu)
    attrs += attr(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, "vxlan") + attr(IFLA_INFO_DATA, data))
    return Request(RTM_NEWLINK, _create(False), _ifinfo() + attrs, f"create vxlan {name}")


def set_link(index: int, *, up: bool | None = None, master: int | None = None, mtu: int | None = None,
             alias: str | None = None, what: str = "") -> Request:
    """`ip link set` of the link with `index`: up/down, master, mtu, alias."""
    flags = change = 0
    if up is not None:
        change, flags = IFF_UP, (IFF_UP if up else 0)
    attrs = b""
    if master is not None:
        attrs += attr_u32(IFLA_MASTER, master)
    if mtu:
        attrs += attr_u32(IFLA_MTU, mtu)
    if alias is not None:
        attrs += attr_str(IFLA_IFALIAS, alias)
    return Request(RTM_NEWLINK, 0, _ifinfo(index, flags, change) + attrs, what or f"set link #{index}")


def del_link(name: str) -> Request:
    """`ip link del NAME`; a missing link is an ENODEV error (see `Netlink.delete_link`)."""
    return Request(RTM_DELLINK, 0, _ifinfo() + attr_str(IFLA_IFNAME, name), f"delete link {name}")


def address(index: int, ip: str, prefixlen: int, *, replace: bool = False, exist_ok: bool = False,
            scope: int = RT_SCOPE_UNIVERSE, nodad: bool = False, what: str = "") -> Request:
    """`ip addr add|replace IP/LEN dev #index [nodad]`, IPv4 or IPv6; `exist_ok`: an address already
    there is no error. `nodad` (IPv6): usable at once, never `tentative` (no duplicate address detection)."""
    family = _af(ip)
    packed = _pack(family, ip)
    flags = IFA_F_NODAD if nodad and family == socket.AF_INET6 else 0
    body = _IFADDR.pack(family, prefixlen, flags, scope, index) + attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed)
    return Request(RTM_NEWADDR, _create(replace), body, what or f"add address {ip}/{prefixlen}",
                   (errno.EEXIST,) if exist_ok else ())


def _route_body(dst: str, gateway: str | None, oif: int | None, scope: int, onlink: bool, proto: int,
                rtn: int) -> tuple[bytes, str]:
    # the family is the destination's, or for 'default' the gateway's (IPv4 when neither says)
    family = _af(gateway) if dst == "default" and gateway else _af(dst)
    address_, length = _prefix(dst, family)
    if family == socket.AF_INET6:
        scope = RT_SCOPE_UNIVERSE if scope != RT_SCOPE_NOWHERE else scope  # IPv6 routes have no link scope
    body = _RTMSG.pack(family, length, 0, 0, RT_TABLE_MAIN, proto, scope, rtn, RTNH_F_ONLINK if onlink else 0)
    if length:
        body += attr(RTA_DST, _pack(family, address_))
    if gateway:
        body += attr(RTA_GATEWAY, _pack(family, gateway))
    if oif is not None:
        body += attr_u32(RTA_OIF, oif)
    return body, f"{address_}/{length}" if length else "default"


def route(dst: str, *, gateway: str | None = None, oif: int | None = None, scope: int | None = None,
          onlink: bool = False, replace: bool = False, proto: int = RTPROT_BOOT, what: str = "") -> Request:
    """`ip route add|replace DST [via GW] [dev #oif] [onlink]` in the main table; DST a prefix, an address
    or 'default' (IPv6's with an IPv6 gateway; or write '::/0'). The scope is `link` without a gateway,
    `universe` with one, unless given (IPv6: always `universe`)."""
    if scope is None:
        scope = RT_SCOPE_UNIVERSE if gateway else RT_SCOPE_LINK
    body, shown = _route_body(dst, gateway, oif, scope, onlink, proto, RTN_UNICAST)
    return Request(RTM_NEWROUTE, _create(replace), body, what or f"add route {shown}")


def del_route(dst: str, *, gateway: str | None = None, oif: int | None = None, missing_ok: bool = True,
              what: str = "") -> Request:
    """`ip route del DST [via GW] [dev #oif]`; with `missing_ok`, a route already gone is no error."""
    body, shown = _route_body(dst, gateway, oif, RT_SCOPE_NOWHERE, False, 0, 0)  # as iproute2: match any
    return Request(RTM_DELROUTE, 0, body, what or f"delete route {shown}",
                   (errno.ESRCH, errno.ENOENT) if missing_ok else ())


def neighbour(ip: str, mac: str, index: int, what: str = "") -> Request:
    """`ip neigh replace IP lladdr MAC dev #index nud permanent`."""
    family = _af(ip)
    body = (_NDMSG.pack(family, index, NUD_PERMANENT, 0, 0) + attr(NDA_DST, _pack(family, ip))
            + attr(NDA_LLADDR, _mac(mac)))
    return Request(RTM_NEWNEIGH, _create(True), body, what or f"add neighbour {ip}")


def fdb(mac: str, index: int, dst: str, what: str = "") -> Request:
    """`bridge fdb replace MAC dev #index dst IP self permanent` (a vxlan device's forwarding entry)."""
    body = (_NDMSG.pack(AF_BRIDGE, index, NUD_PERMANENT, NTF_SELF, 0) + attr(NDA_LLADDR, _mac(mac))
            + attr(NDA_DST, socket.inet_aton(dst)))
    return Request(RTM_NEWNEIGH, _create(True), body, what or f"add fdb entry {mac} -> {dst}")


# ---------------------------------------------------------------------------
# namespaces

_setns = None


def _libc_setns():
    """libc's setns via `_ctypes` directly: `import ctypes` costs ~2.5 ms on the exec path."""
    import _ctypes

    class _Int(_ctypes._SimpleCData):
        _type_ = "i"

    class _Func(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = _Int

    class _Lib:
        _handle = _ctypes.dlopen(None, os.RTLD_NOW)

    fn = _Func(("setns", _Lib()))
    fn.argtypes = (_Int, _Int)
    return fn, _ctypes.get_errno


def setns(fd: int) -> None:
    """setns(fd, CLONE_NEWNET) for the calling thread (os.setns is 3.12+)."""
    global _setns
    if hasattr(os, "setns"):  # pragma: no cover - Python 3.12+
        os.setns(fd, CLONE_NEWNET)
        return
    if _setns is None:
        _setns = _libc_setns()
    fn, get_errno = _setns
    if fn(fd, CLONE_NEWNET) != 0:
        err = get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


# ---------------------------------------------------------------------------
# the socket


def _new_socket():
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return sock


class Netlink:
    """One NETLINK_ROUTE socket, bound to the namespace it was opened in."""

    def __init__(self, sock=None, groups: int = 0):
        self.sock = sock if sock is not None else _new_socket()
        self.sock.bind((0, groups))  # groups: the multicast groups whose notifications it receives
        self.seq = 0

    @classmethod
    def in_netns(cls, path: str | None, groups: int = 0) -> Netlink:
        """A socket inside the namespace at `path` (None: the thread's own), joined to `groups`."""
        if not path:
            return cls(groups=groups)
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                setns(target)
                try:
                    sock = _new_socket()
                finally:
                    setns(own)
            finally:
                os.close(own)
        finally:
            os.close(target)
        return cls(sock, groups)

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> list[tuple[int, bytes]]:
        """The messages of one datagram (type, payload): a monitoring socket's notifications, read when
        select() says the socket is readable."""
        data = self.sock.recv(1 << 16)
        out, off = [], 0
        while off + _HDR.size <= len(data):
            ln, rtype, _flags, _seq, _ = _HDR.unpack_from(data, off)
            if ln < _HDR.size:
                break
            out.append((rtype, data[off + _HDR.size : off + ln]))
            off += _align(ln)
        return out

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- transport -------------------------------------------------------
    def _messages(self):
        """(type, sequence number, payload) of each message the kernel sends back, as they come."""
        while True:
            data = self.sock.recv(65536)
            off = 0
            while off + _HDR.size <= len(data):
                ln, rtype, _flags, rseq, _ = _HDR.unpack_from(data, off)
                yield rtype, rseq, data[off + _HDR.size : off + ln]
                off += _align(ln)

    def do(self, *requests: Request) -> None:
        """Send every request (pipelined, like `ip -batch`); raise the first failure after all acks are in."""
        first: NetlinkError | None = None
        for start in range(0, len(requests), _ACK_EVERY):
            pending: dict[int, Request] = {}
            for req in requests[start:start + _ACK_EVERY]:
                self.seq += 1
                pending[self.seq] = req
                self.sock.send(req.encode(self.seq))
            for rtype, rseq, payload in self._messages():
                if rtype == NLMSG_ERROR and rseq in pending:
                    req = pending.pop(rseq)
                    err = -struct.unpack_from("=i", payload)[0]
                    if err and err not in req.tolerate and first is None:
                        first = NetlinkError(err, req.what)
                    if not pending:
                        break
        if first is not None:
            raise first

    def query(self, mtype: int, flags: int, body: bytes, what: str) -> list[tuple[int, bytes]]:
        """Send one request; return the replies (type, payload) until its ACK or the dump's DONE."""
        self.seq += 1
        seq = self.seq
        self.sock.send(Request(mtype, flags, body, what).encode(seq))
        out: list[tuple[int, bytes]] = []
        for rtype, rseq, payload in self._messages():
            if rseq != seq:
                continue
            if rtype == NLMSG_ERROR:
                (err,) = struct.unpack_from("=i", payload)
                if err:
                    raise NetlinkError(-err, what)
                return out
            if rtype == NLMSG_DONE:
                return out
            out.append((rtype, payload))  # a single reply is followed by its ACK
        raise AssertionError("unreachable: the kernel ends every answer")

    # -- reading ---------------------------------------------------------
    def link(self, name: str) -> dict | None:
        """{index, name, flags, mtu, mac, alias, master, kind, data} of `name`, or None if absent."""
        try:
            replies = self.query(RTM_GETLINK, 0, _ifinfo() + attr_str(IFLA_IFNAME, name), f"get link {name}")
        except NetlinkError as e:
            if e.errno in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        for rtype, payload in replies:
            if rtype == RTM_NEWLINK:
                return _link_info(payload)
        return None

    def links(self) -> list[dict]:
        replies = self.query(RTM_GETLINK, NLM_F_DUMP, _ifinfo(), "list interfaces")
        return [_link_info(p) for t, p in replies if t == RTM_NEWLINK]

    def link_indexes(self) -> dict[str, int]:
        """Interface name -> index (one dump)."""
        return {link["name"]: link["index"] for link in self.links()}

    def addresses(self, family: int = 4) -> list[dict]:
        """{index, address, prefixlen, flags} of every address of `family` (4 or 6; 0: both). `flags`
        are the IFA_F_* bits (IFA_F_TENTATIVE: an IPv6 address still in duplicate address detection)."""
        body = _IFADDR.pack(_AF_OF[family], 0, 0, 0, 0)
        out = []
        for rtype, p in self.query(RTM_GETADDR, NLM_F_DUMP, body, "list addresses"):
            if rtype != RTM_NEWADDR:
                continue
            info = address_info(p)
            if info["address"] is not None:
                out.append(info)
        return out

    def routes(self, family: int = 4) -> list[dict]:
        """{dst, prefixlen, gateway, oif, scope} of every unicast route of `family` (4 or 6; 0: both)
        in the main table."""
        body = _RTMSG.pack(_AF_OF[family], 0, 0, 0, 0, 0, 0, 0, 0)
        out = []
        for rtype, p in self.query(RTM_GETROUTE, NLM_F_DUMP, body, "list routes"):
            if rtype != RTM_NEWROUTE:
                continue
            _fam, dlen, _, _, table, _, scope, rtn, _ = _RTMSG.unpack_from(p)
            a = parse_attrs(p, _RTMSG.size)
            if RTA_TABLE in a:
                table = _U32.unpack(a[RTA_TABLE])[0]
            if table != RT_TABLE_MAIN or rtn != RTN_UNICAST:
                continue
            out.append({
                "dst": _unpack(a[RTA_DST]) if RTA_DST in a else _ANY.get(_fam, "0.0.0.0"),
                "prefixlen": dlen,
                "gateway": _unpack(a[RTA_GATEWAY]) if RTA_GATEWAY in a else None,
                "oif": _U32.unpack(a[RTA_OIF])[0] if RTA_OIF in a else None,
                "scope": scope,
            })
        return out

    # -- the odd one-shot ------------------------------------------------
    def delete_link(self, name: str) -> bool:
        """Delete `name`; False if it did not exist."""
        try:
            self.do(del_link(name))
        except NetlinkError as e:
            if e.errno in (errno.ENODEV, errno.ENOENT):
                return False
            raise
        return True


def _link_info(payload: bytes) -> dict:
    _, _, index, flags, _ = _IFINFO.unpack_from(payload)
    a = parse_attrs(payload, _IFINFO.size)
    mac = a.get(IFLA_ADDRESS, b"")
    info = parse_attrs(a[IFLA_LINKINFO]) if IFLA_LINKINFO in a else {}
    return {
        "index": index,
        "name": a.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(),
        "flags": flags,
        "mtu": _U32.unpack(a[IFLA_MTU])[0] if IFLA_MTU in a else None,
        "mac": ":".join(f"{b:02x}" for b in mac),
        "alias": a.get(IFLA_IFALIAS, b"").rstrip(b"\0").decode() or None,
        "master": _U32.unpack(a[IFLA_MASTER])[0] if IFLA_MASTER in a else None,
        "kind": info.get(IFLA_INFO_KIND, b"").rstrip(b"\0").decode() or None,
        "data": parse_attrs(info[IFLA_INFO_DATA]) if IFLA_INFO_DATA in info else {},
    }


def link_info(payload: bytes) -> dict:
    """An RTM_NEWLINK / RTM_DELLINK payload as {index, name, flags, mtu, mac, alias, master, kind, data}."""
    return _link_info(payload)


def address_info(payload: bytes) -> dict:
    """An RTM_NEWADDR / RTM_DELADDR payload as {index, address, prefixlen, flags, family} (family 4 or 6)."""
    fam, plen, flags, _scope, index = _IFADDR.unpack_from(payload)
    a = parse_attrs(payload, _IFADDR.size)
    raw = a.get(IFA_LOCAL) or a.get(IFA_ADDRESS)
    if IFA_FLAGS in a:  # the 32-bit flags (the header's byte holds only the low 8)
        flags = _U32.unpack(a[IFA_FLAGS])[0]
    return {"index": index, "address": _unpack(raw) if raw and len(raw) in (4, 16) else None,
            "prefixlen": plen, "flags": flags, "family": 6 if fam == socket.AF_INET6 else 4}


def route_info(payload: bytes) -> dict:
    """An RTM_NEWROUTE / RTM_DELROUTE payload as {dst, prefixlen, gateway, oif, table, type, scope}
    (IPv4 or IPv6)."""
    _fam, dlen, _, _, table, _, scope, rtn, _ = _RTMSG.unpack_from(payload)
    a = parse_attrs(payload, _RTMSG.size)
    if RTA_TABLE in a:
        table = _U32.unpack(a[RTA_TABLE])[0]
    return {
        "dst": _unpack(a[RTA_DST]) if RTA_DST in a else _ANY.get(_fam, "0.0.0.0"),
        "prefixlen": dlen,
        "gateway": _unpack(a[RTA_GATEWAY]) if RTA_GATEWAY in a else None,
        "oif": _U32.unpack(a[RTA_OIF])[0] if RTA_OIF in a else None,
        "table": table, "type": rtn, "scope": scope,
    }


def vxlan_info(link: dict) -> dict:
    """{id, port, local} of a vxlan link as returned by `Netlink.link` ({} for another kind)."""
    if link.get("kind") != "vxlan":
        return {}
    data = link["data"]
    return {
        "id": _U32.unpack(data[IFLA_VXLAN_ID])[0] if IFLA_VXLAN_ID in data else None,
        "port": struct.unpack("!H", data[IFLA_VXLAN_PORT])[0] if IFLA_VXLAN_PORT in data else None,
        "local": socket.inet_ntoa(data[IFLA_VXLAN_LOCAL]) if IFLA_VXLAN_LOCAL in data else None,
    }


def send(*requests: Request) -> None:
    """Netlink().do(*requests) on a socket in the calling thread's namespace."""
    if requests:
        with Netlink() as nl:
            nl.do(*requests)


def link_indexes() -> dict[str, int]:
    """Interface name -> index in the calling thread's network namespace."""
    with Netlink() as nl:
        return nl.link_indexes()
