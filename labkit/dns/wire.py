"""DNS wire format, just what the cluster DNS server needs (RFC 1035, 6891 EDNS).

Encodes `records.Answer`s into response templates and parses queries for the server's
slow path. Deliberately not dnspython: importing `dns.message` costs ~100 ms, and the
server is started inside network namespaces where start-up time shows.

A response template is split so the hot path only glues bytes: the client's 2-byte
ID, a 10-byte header tail chosen by the query's RD bit, the query's own question
bytes (echoing its letter case), then the precomputed body. Names in the body are
compressed against the question at offset 12, whose length does not depend on case.
"""

from __future__ import annotations

import socket
import struct

from labkit.dns.records import (
    AAAA,
    CNAME,
    FORMERR,
    HINFO,
    NOTIMP,
    NS,
    OPT,
    PTR,
    SOA,
    SRV,
    TXT,
    A,
    Answer,
)

EDNS_UDP_SIZE = 1232          # what we advertise (DNS flag day 2020)
BADVERS = 16
_HDR = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")


class FormatError(Exception):
    """The query cannot be parsed (FORMERR)."""


# ----------------------------------------------------------------------- encoding


def name_to_wire(name: str) -> bytes:
    """'web.default.svc.cluster.local.' -> length-prefixed labels, uncompressed."""
    parts = [x.encode("ascii") for x in name.rstrip(".").split(".") if x]
    return b"".join(bytes((len(x),)) + x for x in parts) + b"\x00"


def _encode_name(buf: bytearray, comp: dict[str, int], name: str, compress: bool = True) -> None:
    labels = [x for x in name.rstrip(".").split(".") if x]
    for i in range(len(labels)):
        suffix = ".".join(labels[i:]).lower()
        if compress and suffix in comp:
            buf += struct.pack("!H", 0xC000 | comp[suffix])
            return
        if len(buf) < 0x3FFF and suffix not in comp:
            comp[suffix] = len(buf)
        raw = labels[i].encode("latin-1")
        buf.append(len(raw))
        buf += raw
    buf.append(0)


def _encode_rr(buf: bytearray, comp: dict[str, int], rr: tuple) -> None:
    owner, rtype, ttl, rdata = rr
    _encode_name(buf, comp, owner)
    at = len(buf)
    buf += _RR.pack(rtype, 1, ttl, 0)
    start = len(buf)
    if rtype == A:
        buf += socket.inet_pton(socket.AF_INET, rdata)
    elif rtype == AAAA:
        buf += socket.inet_pton(socket.AF_INET6, rdata)
    elif rtype in (CNAME, PTR, NS):
        _encode_name(buf, comp, rdata)
    elif rtype == SRV:
        buf += struct.pack("!HHH", rdata[0], rdata[1], rdata[2])
        _encode_name(buf, comp, rdata[3], compress=False)   # RFC 2782: no compression
    elif rtype in (TXT, HINFO):      # character-strings (HINFO: CPU, OS)
        for s in rdata:
            raw = s.encode("utf-8")[:255]
            buf.append(len(raw))
            buf += raw
    elif rtype == SOA:
        _encode_name(buf, comp, rdata[0])
        _encode_name(buf, comp, rdata[1])
        buf += struct.pack("!IIIII", *rdata[2:7])
    else:
        raise ValueError(f"cannot encode RR type {rtype}")
    struct.pack_into("!H", buf, at + 8, len(buf) - start)


def opt_rr(udp_size: int = EDNS_UDP_SIZE, ext_rcode: int = 0, do: bool = False) -> bytes:
    return b"\x00" + _RR.pack(OPT, udp_size, (ext_rcode << 24) | (0x8000 if do else 0), 0)


class Variant:
    """One precomputed response shape: header tails for RD=0/RD=1, and the body."""

    __slots__ = ("hdr", "body", "size")

    def __init__(self, hdr: tuple[bytes, bytes], body: bytes, size: int):
        self.hdr = hdr
        self.body = body
        self.size = size


def _header_tails(flags2: int, rcode: int, ra: bool, counts: tuple[int, int, int, int]
                  ) -> tuple[bytes, bytes]:
    b3 = (0x80 if ra else 0) | (rcode & 0xF)
    tail = struct.pack("!HHHH", *counts)
    return bytes((flags2, b3)) + tail, bytes((flags2 | 1, b3)) + tail


def _label_text(raw: bytes) -> str:
    # A '.' inside a label must not make it look like two labels.
    return raw.decode("latin-1").lower().replace(".", "\\.")


def wire_labels(qwire: bytes) -> list[str]:
    """The labels of an uncompressed wire name, lowercase, as compression sees them."""
    labels = []
    pos = 0
    while pos < len(qwire) and qwire[pos]:
        ln = qwire[pos]
        labels.append(_label_text(qwire[pos + 1:pos + 1 + ln]))
        pos += 1 + ln
    return labels


def encode_sections(qwire: bytes, answer: Answer) -> tuple[bytes, tuple[int, int, int]]:
    """The answer, authority and additional sections of a response to a question whose
    name is `qwire` (uncompressed wire form, any case: only its length and labels
    matter, names are compressed against it at offset 12), and their RR counts."""
    qlen = len(qwire) + 4
    buf = bytearray(12 + qlen)
    comp: dict[str, int] = {}
    labels: list[tuple[int, str]] = []
    pos = 0
    while pos < len(qwire) and qwire[pos]:
        ln = qwire[pos]
        labels.append((12 + pos, _label_text(qwire[pos + 1:pos + 1 + ln])))
        pos += 1 + ln
    suffix = ""
    for off, text in reversed(labels):
        suffix = f"{text}.{suffix}" if suffix else text
        comp[suffix] = off
    for rr in answer.answer:
        _encode_rr(buf, comp, rr)
    for rr in answer.authority:
        _encode_rr(buf, comp, rr)
    for rr in answer.additional:
        _encode_rr(buf, comp, rr)
    counts = (len(answer.answer), len(answer.authority), len(answer.additional))
    return bytes(buf[12 + qlen:]), counts


def make_variants(qwire: bytes, answer: Answer, *, ra: bool, aa: bool = True
                  ) -> tuple[Variant, Variant, Variant, Variant]:
    """(udp, edns, edns_truncated, tcp): the response shapes the server sends. `udp`
    (no EDNS) is already truncated (TC, sections emptied) when over 512 bytes; `edns`
    is the full answer plus our OPT, to be swapped for `edns_truncated` when larger
    than the client's advertised size; `tcp` is the full answer without OPT."""
    body, (an, ns, ar) = encode_sections(qwire, answer)
    base = 12 + len(qwire) + 4
    flags2 = 0x80 | (0x04 if aa else 0)
    rcode = answer.rcode
    tcp = Variant(_header_tails(flags2, rcode, ra, (1, an, ns, ar)), body, base + len(body))
    opt = opt_rr()
    edns = Variant(_header_tails(flags2, rcode, ra, (1, an, ns, ar + 1)), body + opt,
                   base + len(body) + len(opt))
    edns_tc = Variant(_header_tails(flags2 | 0x02, rcode, ra, (1, 0, 0, 1)), opt,
                      base + len(opt))
    udp = tcp if tcp.size <= 512 else Variant(
        _header_tails(flags2 | 0x02, rcode, ra, (1, 0, 0, 0)), b"", base)
    return udp, edns, edns_tc, tcp


# ----------------------------------------------------------------------- parsing


class Query:
    """A parsed query. `question` is the raw question bytes (name, type, class) as sent;
    `edns` is None or (udp_size, ext_rcode, version, do)."""

    __slots__ = ("id", "flags2", "opcode", "rd", "qname", "qtype", "qclass", "question",
                 "edns")

    def __init__(self) -> None:
        self.id = b"\0\0"
        self.flags2 = 0
        self.opcode = 0
        self.rd = 0
        self.qname = ""
        self.qtype = 0
        self.qclass = 0
        self.question = b""
        self.edns: tuple[int, int, int, bool] | None = None


def _read_name(data: bytes, pos: int, allow_pointers: bool) -> tuple[str, int]:
    """Returns (lowercase fqdn, position after the name)."""
    labels: list[str] = []
    total = 0
    end = -1
    hops = 0
    while True:
        if pos >= len(data):
            raise FormatError("name runs past the end")
        ln = data[pos]
        if ln == 0:
            pos += 1
            break
        if ln & 0xC0 == 0xC0:
            if not allow_pointers or pos + 1 >= len(data):
                raise FormatError("compression pointer in question")
            hops += 1
            if hops > 64:
                raise FormatError("pointer loop")
            if end < 0:
                end = pos + 2
            pos = ((ln & 0x3F) << 8) | data[pos + 1]
            continue
        if ln & 0xC0:
            raise FormatError("bad label type")
        raw = data[pos + 1:pos + 1 + ln]
        if len(raw) != ln:
            raise FormatError("label runs past the end")
        total += ln + 1
        if total > 255:
            raise FormatError("name too long")
        labels.append(_label_text(raw))
        pos += 1 + ln
    name = ".".join(labels) + "."
    return name, (end if end >= 0 else pos)


def parse_query(data: bytes) -> Query | None:
    """None: drop silently (too short to answer, or a response). Raises FormatError
    with the partially filled Query in `args[1]` for FORMERR, and returns the Query with
    opcode != 0 for NOTIMP (caller decides)."""
    if len(data) < 12:
        return None
    q = Query()
    q.id = data[:2]
    q.flags2 = data[2]
    if q.flags2 & 0x80:
        return None
    q.opcode = (q.flags2 >> 3) & 0xF
    q.rd = q.flags2 & 1
    if q.opcode != 0:
        return q
    _, _, qd, an, ns, ar = _HDR.unpack_from(data)
    if qd != 1 or an != 0 or ns != 0:
        raise FormatError("need exactly one question and no answer/authority", q)
    try:
        q.qname, pos = _read_name(data, 12, allow_pointers=False)
    except FormatError as e:
        raise FormatError(str(e), q) from None
    if pos + 4 > len(data):
        raise FormatError("question truncated", q)
    q.qtype, q.qclass = struct.unpack_from("!HH", data, pos)
    q.question = data[12:pos + 4]
    pos += 4
    for _ in range(ar):
        try:
            _, pos = _read_name(data, pos, allow_pointers=True)
        except FormatError as e:
            raise FormatError(str(e), q) from None
        if pos + 10 > len(data):
            raise FormatError("additional record truncated", q)
        rtype, rclass, ttl, rdlen = _RR.unpack_from(data, pos)
        pos += 10 + rdlen
        if pos > len(data):
            raise FormatError("rdata truncated", q)
        if rtype == OPT:
            if q.edns is not None:
                raise FormatError("two OPT records", q)
            q.edns = (max(512, rclass), ttl >> 24, (ttl >> 16) & 0xFF, bool(ttl & 0x8000))
    return q


def error_response(q: Query, rcode: int, *, with_question: bool, ra: bool) -> bytes:
    """A header-only (or question-echoing) error response: FORMERR, NOTIMP, REFUSED,
    SERVFAIL, BADVERS (extended rcode, needs EDNS)."""
    flags2 = 0x80 | (q.opcode << 3) | q.rd
    question = q.question if with_question else b""
    body = b""
    ar = 0
    if q.edns is not None:
        body = opt_rr(ext_rcode=rcode >> 4, do=q.edns[3])
        ar = 1
    b3 = (0x80 if ra else 0) | (rcode & 0xF)
    return (q.id + bytes((flags2, b3)) + struct.pack("!HHHH", 1 if question else 0, 0, 0, ar)
            + question + body)


def make_query(name: str, qtype: int) -> bytes:
    """A recursive query (RD, EDNS 1232) with ID 0, for asking an upstream."""
    return (_HDR.pack(0, 0x0100, 1, 0, 0, 1) + name_to_wire(name) + struct.pack("!HH", qtype, 1)
            + opt_rr())


def parse_answer(data: bytes) -> tuple[int, list[tuple]]:
    """(rcode, the answer section's A/AAAA/CNAME RRs) of an upstream's response."""
    if len(data) < 12:
        raise FormatError("short response")
    _, flags, qd, an, _, _ = _HDR.unpack_from(data)
    pos = 12
    for _ in range(qd):
        _, pos = _read_name(data, pos, allow_pointers=True)
        pos += 4
    out: list[tuple] = []
    for _ in range(an):
        owner, pos = _read_name(data, pos, allow_pointers=True)
        rtype, rclass, ttl, rdlen = _RR.unpack_from(data, pos)
        pos += 10
        rdata = data[pos:pos + rdlen]
        if len(rdata) != rdlen:
            raise FormatError("rdata truncated")
        if rclass == 1 and "\\" not in owner:
            if rtype == A and rdlen == 4:
                out.append((owner, A, ttl, socket.inet_ntop(socket.AF_INET, rdata)))
            elif rtype == AAAA and rdlen == 16:
                out.append((owner, AAAA, ttl, socket.inet_ntop(socket.AF_INET6, rdata)))
            elif rtype == CNAME:
                target, _ = _read_name(data, pos, allow_pointers=True)
                if "\\" not in target:
                    out.append((owner, CNAME, ttl, target))
        pos += rdlen
    return flags & 0xF, out


__all__ = ["FORMERR", "NOTIMP", "BADVERS", "Query", "Variant", "FormatError", "parse_query",
           "encode_sections", "make_variants", "error_response", "name_to_wire", "opt_rr", "wire_labels",
           "make_query", "parse_answer"]
