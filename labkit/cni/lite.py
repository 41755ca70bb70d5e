"""IPv4/IPv6 and JSON helpers for the exec path, without `re`, `ipaddress` or `json`.

Under `python -S` (the lean launcher) `import re` alone costs ~12 ms (it drags in
enum), `ipaddress` ~2 ms and `json` pulls in `re`; the C accelerators `_json`
and `_socket` do the real work here. Strict like `ipaddress`: dotted quads only,
no leading zeros; IPv6 as `inet_pton` takes it (no zone), printed in the RFC 5952
form `inet_ntop` gives (what host-local names its lease files by).
"""

from __future__ import annotations

import _json
import _socket

# ---------------------------------------------------------------------------
# IPv4


def _octets(s: str) -> int:
    if not isinstance(s, str):
        raise ValueError(f"{s!r} is not a string")
    parts = s.split(".")
    if len(parts) != 4:
        raise ValueError(f"expected 4 octets in {s!r}")
    n = 0
    for p in parts:
        if not p or len(p) > 3 or not p.isascii() or not p.isdigit() or (len(p) > 1 and p[0] == "0"):
            raise ValueError(f"bad octet {p!r} in {s!r}")
        v = int(p)
        if v > 255:
            raise ValueError(f"octet {v} > 255 in {s!r}")
        n = (n << 8) | v
    return n


def fmt(n: int) -> str:
    return f"{(n >> 24) & 255}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


class Addr(int):
    """An IPv4 address: an int that prints as a dotted quad."""

    __slots__ = ()
    version = 4
    bits = 32

    def __new__(cls, value) -> Addr:
        if isinstance(value, str):
            value = _octets(value)
        value = int(value)
        if not 0 <= value <= 0xFFFFFFFF:
            raise ValueError(f"{value} is not an IPv4 address")
        return super().__new__(cls, value)

    def __str__(self) -> str:
        return fmt(self)

    def __repr__(self) -> str:
        return f"Addr('{fmt(self)}')"

    def __format__(self, spec: str) -> str:  # f-strings print the dotted quad
        return format(fmt(self), spec)


# ---------------------------------------------------------------------------
# IPv6

_ALL6 = (1 << 128) - 1


def _groups(s: str) -> int:
    if not isinstance(s, str):
        raise ValueError(f"{s!r} is not a string")
    if ":" not in s or "%" in s or not s.isascii():
        raise ValueError(f"{s!r} is not an IPv6 address")
    try:
        return int.from_bytes(_socket.inet_pton(_socket.AF_INET6, s), "big")
    except OSError:
        raise ValueError(f"{s!r} is not an IPv6 address") from None


def fmt6(n: int) -> str:
    return _socket.inet_ntop(_socket.AF_INET6, int(n).to_bytes(16, "big"))


class Addr6(int):
    """An IPv6 address: an int that prints in the RFC 5952 form."""

    __slots__ = ()
    version = 6
    bits = 128

    def __new__(cls, value) -> Addr6:
        if isinstance(value, str):
            value = _groups(value)
        value = int(value)
        if not 0 <= value <= _ALL6:
            raise ValueError(f"{value} is not an IPv6 address")
        return super().__new__(cls, value)

    def __str__(self) -> str:
        return fmt6(self)

    def __repr__(self) -> str:
        return f"Addr6('{fmt6(self)}')"

    def __format__(self, spec: str) -> str:
        return format(fmt6(self), spec)


def ip_address(value) -> Addr | Addr6:
    """An address of either family from its text ('10.0.0.1', 'fd00::1'); an Addr6 or Addr passes through."""
    if isinstance(value, (Addr, Addr6)):
        return value
    if isinstance(value, str) and ":" in value:
        return Addr6(value)
    return Addr(value)


class Net:
    """An IPv4 or IPv6 network 'a.b.c.d/len' / 'fd00::/64' (host bits masked off, like strict=False)."""

    __slots__ = ("network", "prefixlen")

    def __init__(self, cidr: str):
        if not isinstance(cidr, str):
            raise ValueError(f"{cidr!r} is not a CIDR string")
        addr, sep, plen = cidr.partition("/")
        kind = Addr6 if ":" in addr else Addr
        if not sep:
            plen = str(kind.bits)
        if not plen.isascii() or not plen.isdigit() or int(plen) > kind.bits or (len(plen) > 1 and plen[0] == "0"):
            raise ValueError(f"bad prefix length in {cidr!r}")
        self.prefixlen = int(plen)
        self.network = kind((_groups(addr) if kind is Addr6 else _octets(addr)) & self._mask(kind.bits))

    def _mask(self, bits: int) -> int:
        ones = (1 << bits) - 1
        return (ones << (bits - self.prefixlen)) & ones

    @property
    def version(self) -> int:
        return self.network.version

    @property
    def netmask(self) -> int:
        return self._mask(self.network.bits)

    @property
    def network_address(self) -> Addr | Addr6:
        return self.network

    @property
    def broadcast_address(self) -> Addr | Addr6:
        """The last address (IPv4's broadcast; for IPv6 just the last)."""
        bits = self.network.bits
        return type(self.network)(self.network | (~self.netmask & ((1 << bits) - 1)))

    def __contains__(self, ip) -> bool:
        if isinstance(ip, str):
            try:
                ip = ip_address(ip)
            except ValueError:
                return False
        if getattr(ip, "version", 4) != self.version:
            return False
        return (int(ip) & self.netmask) == self.network

    def __str__(self) -> str:
        return f"{self.network}/{self.prefixlen}"

    def __repr__(self) -> str:
        return f"Net('{self}')"

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            try:
                other = Net(other)
            except ValueError:
                return False
        return isinstance(other, Net) and (self.version, self.network, self.prefixlen) == (
            other.version, other.network, other.prefixlen)

    def __hash__(self) -> int:
        return hash((self.version, int(self.network), self.prefixlen))


# ---------------------------------------------------------------------------
# JSON


class JSONError(ValueError):
    pass


_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


class _Ctx:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__
    memo: dict = {}


_scan = _json.make_scanner(_Ctx())
_WS = " \t\n\r"


MAX_DEPTH = 64  # a CNI config nests a few levels (a conflist's prevResult, ipam.routes); no config needs more


def _depth_within(obj, limit: int) -> bool:
    """Whether `obj` nests at most `limit` arrays/objects deep (iterative: no recursion to exhaust)."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return False
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return True


def loads(data: str | bytes, *, max_depth: int = MAX_DEPTH):
    """json.loads for the exec path; JSONError (a ValueError) on bad input, including arrays and
    objects nested deeper than `max_depth` (the C scanner recurses: unbounded nesting would exhaust
    the stack or the recursion limit before any check of ours)."""
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise JSONError(f"not UTF-8: {e}") from None
    n = len(data)
    i = 0
    while i < n and data[i] in _WS:
        i += 1
    try:
        obj, end = _scan(data, i)
    except RecursionError:
        raise JSONError(f"JSON nested deeper than {max_depth} levels") from None
    except (StopIteration, ValueError, SystemError):
        # The C scanner builds most of its errors from json.decoder, which this path never imports
        # (CPython 3.11 then returns NULL with no exception: a SystemError). Only the error path
        # pays for the import, to give json's own message.
        import json

        try:
            json.loads(data)
        except ValueError as e:
            raise JSONError(str(e)) from None
        raise JSONError("malformed JSON") from None
    while end < n and data[end] in _WS:
        end += 1
    if end != n:
        raise JSONError(f"extra data at char {end}")
    if isinstance(obj, (dict, list)) and not _depth_within(obj, max_depth):
        raise JSONError(f"JSON nested deeper than {max_depth} levels")
    return obj


_esc = _json.encode_basestring_ascii


def dumps(obj) -> str:
    """Compact-ish json.dumps for results (', ' and ': ' separators like json's default)."""
    out: list[str] = []
    _enc(obj, out.append)
    return "".join(out)


def _enc(o, w) -> None:
    if isinstance(o, str):
        w(_esc(o))
    elif o is None:
        w("null")
    elif o is True:
        w("true")
    elif o is False:
        w("false")
    elif isinstance(o, int):
        w(int.__repr__(o))
    elif isinstance(o, float):
        if o != o or o in (float("inf"), float("-inf")):
            raise ValueError("out of range float values are not JSON compliant")
        w(float.__repr__(o))
    elif isinstance(o, dict):
        w("{")
        first = True
        for k, v in o.items():
            if not first:
                w(", ")
            first = False
            if not isinstance(k, str):
                raise TypeError(f"keys must be str, not {type(k).__name__}")
            w(_esc(k))
            w(": ")
            _enc(v, w)
        w("}")
    elif isinstance(o, (list, tuple)):
        w("[")
        for i, v in enumerate(o):
            if i:
                w(", ")
            _enc(v, w)
        w("]")
    else:
        raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")
