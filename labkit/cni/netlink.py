"""A tiny rtnetlink client: just what a routed pod interface needs.

Hand-written struct encoding over `AF_NETLINK`, standard library only,
because `labkit-cni` is exec'd once per pod and pyroute2 alone costs ~170 ms
to import. Namespaces: a socket stays bound to the network namespace it was
created in, so `socket_in(path)` briefly setns()es the calling thread into the
target namespace, opens the socket and switches back.
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
NLMSG_ERROR, NLMSG_DONE = 2, 3
# flags
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLM_F_DUMP = 0x300
# link attributes
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU = 1, 3, 4
IFLA_LINKINFO, IFLA_IFALIAS, IFLA_NET_NS_FD = 18, 20, 28
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFF_UP = 0x1
# address / route attributes
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_HOST = 0, 253, 254
RTN_UNICAST = 1
RTNH_F_ONLINK = 4
CLONE_NEWNET = 0x40000000

_HDR = struct.Struct("=LHHLL")
_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTA = struct.Struct("=HH")


class NetlinkError(OSError):
    """A kernel NACK: `errno` is the positive errno, `op` says what was asked."""

    def __init__(self, err: int, op: str):
        super().__init__(err, f"{op}: {os.strerror(err)}")
        self.op = op


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, data: bytes) -> bytes:
    ln = 4 + len(data)
    return _RTA.pack(ln, kind) + data + b"\0" * (_align(ln) - ln)


def attr_str(kind: int, s: str) -> bytes:
    return attr(kind, s.encode() + b"\0")


def attr_u32(kind: int, v: int) -> bytes:
    return attr(kind, struct.pack("=I", v))


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


class Netlink:
    """One NETLINK_ROUTE socket, bound to the namespace it was opened in."""

    def __init__(self, sock: socket.socket | None = None):
        if sock is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock = sock
        self.sock.bind((0, 0))
        self.seq = 0

    @classmethod
    def in_netns(cls, path: str | None) -> Netlink:
        """A socket inside the namespace at `path` (None: the thread's own)."""
        if not path:
            return cls()
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                setns(target)
                try:
                    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
                finally:
                    setns(own)
            finally:
                os.close(own)
        finally:
            os.close(target)
        return cls(sock)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- transport -------------------------------------------------------
    def request(self, mtype: int, flags: int, body: bytes, op: str) -> list[tuple[int, bytes]]:
        """Send one message; return the replies (type, payload) until ACK/DONE."""
        self.seq += 1
        seq = self.seq
        msg = _HDR.pack(_HDR.size + len(body), mtype, flags | NLM_F_REQUEST | NLM_F_ACK, seq, 0)
        self.sock.send(msg + body)
        out: list[tuple[int, bytes]] = []
        while True:
            data = self.sock.recv(65536)
            off = 0
            while off + _HDR.size <= len(data):
                ln, rtype, _flags, rseq, _ = _HDR.unpack_from(data, off)
                payload = data[off + _HDR.size : off + ln]
                off += _align(ln)
                if rseq != seq:
                    continue
                if rtype == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", payload)
                    if err:
                        raise NetlinkError(-err, op)
                    return out
                if rtype == NLMSG_DONE:
                    return out
                out.append((rtype, payload))  # a single reply is followed by its ACK

    # -- links -----------------------------------------------------------
    def get_link(self, name: str) -> dict | None:
        """{index, name, flags, mtu, mac, alias} of `name`, or None if absent."""
        body = _IFINFO.pack(0, 0, 0, 0, 0) + attr_str(IFLA_IFNAME, name)
        try:
            replies = self.request(RTM_GETLINK, 0, body, f"get link {name}")
        except NetlinkError as e:
            if e.errno in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        for rtype, payload in replies:
            if rtype == RTM_NEWLINK:
                return _link_info(payload)
        return None

    def dump_links(self) -> list[dict]:
        body = _IFINFO.pack(0, 0, 0, 0, 0)
        replies = self.request(RTM_GETLINK, NLM_F_DUMP, body, "dump links")
        return [_link_info(p) for t, p in replies if t == RTM_NEWLINK]

    def add_veth(
        self, name: str, peer: str, *, peer_netns_fd: int | None = None, mtu: int | None = None
    ) -> None:
        """`ip link add NAME [mtu M] type veth peer name PEER [netns FD] [mtu M]`."""
        peer_attrs = attr_str(IFLA_IFNAME, peer)
        if mtu:
            peer_attrs += attr_u32(IFLA_MTU, mtu)
        if peer_netns_fd is not None:
            peer_attrs += attr_u32(IFLA_NET_NS_FD, peer_netns_fd)
        peer_info = attr(VETH_INFO_PEER, _IFINFO.pack(0, 0, 0, 0, 0) + peer_attrs)
        linkinfo = attr(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, "veth") + attr(IFLA_INFO_DATA, peer_info))
        attrs = attr_str(IFLA_IFNAME, name) + linkinfo
        if mtu:
            attrs += attr_u32(IFLA_MTU, mtu)
        body = _IFINFO.pack(0, 0, 0, 0, 0) + attrs
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"add veth {name}/{peer}")

    def set_link(self, index: int, *, up: bool | None = None, alias: str | None = None) -> None:
        flags = change = 0
        if up is not None:
            change = IFF_UP
            flags = IFF_UP if up else 0
        attrs = attr_str(IFLA_IFALIAS, alias) if alias is not None else b""
        body = _IFINFO.pack(0, 0, index, flags, change) + attrs
        self.request(RTM_NEWLINK, 0, body, f"set link #{index}")

    def del_link(self, name: str) -> bool:
        """Delete `name`; False if it did not exist."""
        body = _IFINFO.pack(0, 0, 0, 0, 0) + attr_str(IFLA_IFNAME, name)
        try:
            self.request(RTM_DELLINK, 0, body, f"delete link {name}")
        except NetlinkError as e:
            if e.errno in (errno.ENODEV, errno.ENOENT):
                return False
            raise
        return True

    # -- addresses -------------------------------------------------------
    def add_addr(self, index: int, ip: str, prefixlen: int, *, scope: int = RT_SCOPE_UNIVERSE,
                 exist_ok: bool = False) -> None:
        packed = socket.inet_aton(ip)
        body = _IFADDR.pack(socket.AF_INET, prefixlen, 0, scope, index)
        body += attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed)
        try:
            self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, f"add address {ip}/{prefixlen}")
        except NetlinkError as e:
            if not (exist_ok and e.errno == errno.EEXIST):
                raise

    def dump_addrs(self) -> list[dict]:
        body = _IFADDR.pack(socket.AF_INET, 0, 0, 0, 0)
        out = []
        for rtype, p in self.request(RTM_GETADDR, NLM_F_DUMP, body, "dump addresses"):
            if rtype != RTM_NEWADDR:
                continue
            _fam, plen, _, _scope, index = _IFADDR.unpack_from(p)
            a = parse_attrs(p, _IFADDR.size)
            raw = a.get(IFA_LOCAL) or a.get(IFA_ADDRESS)
            if raw:
                out.append({"index": index, "address": socket.inet_ntoa(raw), "prefixlen": plen})
        return out

    # -- routes ----------------------------------------------------------
    def add_route(self, dst: str, prefixlen: int, *, oif: int | None = None, gateway: str | None = None,
                  scope: int | None = None, onlink: bool = False, replace: bool = True) -> None:
        if scope is None:
            scope = RT_SCOPE_UNIVERSE if gateway else RT_SCOPE_LINK
        body = _RTMSG.pack(socket.AF_INET, prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, scope,
                           RTN_UNICAST, RTNH_F_ONLINK if onlink else 0)
        if prefixlen:
            body += attr(RTA_DST, socket.inet_aton(dst))
        if gateway:
            body += attr(RTA_GATEWAY, socket.inet_aton(gateway))
        if oif is not None:
            body += attr_u32(RTA_OIF, oif)
        flags = NLM_F_CREATE | (NLM_F_REPLACE if replace else NLM_F_EXCL)
        self.request(RTM_NEWROUTE, flags, body, f"add route {dst}/{prefixlen}")

    def dump_routes(self) -> list[dict]:
        body = _RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
        out = []
        for rtype, p in self.request(RTM_GETROUTE, NLM_F_DUMP, body, "dump routes"):
            if rtype != RTM_NEWROUTE:
                continue
            _fam, dlen, _, _, table, _, scope, rtn, _ = _RTMSG.unpack_from(p)
            if table != RT_TABLE_MAIN or rtn != RTN_UNICAST:
                continue
            a = parse_attrs(p, _RTMSG.size)
            out.append({
                "dst": socket.inet_ntoa(a[RTA_DST]) if RTA_DST in a else "0.0.0.0",
                "prefixlen": dlen,
                "gateway": socket.inet_ntoa(a[RTA_GATEWAY]) if RTA_GATEWAY in a else None,
                "oif": struct.unpack("=I", a[RTA_OIF])[0] if RTA_OIF in a else None,
                "scope": scope,
            })
        return out


def _link_info(payload: bytes) -> dict:
    _, _, index, flags, _ = _IFINFO.unpack_from(payload)
    a = parse_attrs(payload, _IFINFO.size)
    mac = a.get(IFLA_ADDRESS, b"")
    return {
        "index": index,
        "name": a.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(),
        "flags": flags,
        "mtu": struct.unpack("=I", a[IFLA_MTU])[0] if IFLA_MTU in a else None,
        "mac": ":".join(f"{b:02x}" for b in mac),
        "alias": a.get(IFLA_IFALIAS, b"").rstrip(b"\0").decode() or None,
    }
