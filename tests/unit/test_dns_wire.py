"""The server's answers as bytes, checked with dnspython (no sockets: the slow path
that every query not taken by the UDP hot path goes through)."""

from __future__ import annotations

import random

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.reversename
import dns.rrset
import pytest

from labkit.dns import server, wire
from labkit.dns.records import (
    AAAA,
    ANY,
    CNAME,
    HINFO,
    NS,
    PTR,
    SOA,
    SRV,
    TXT,
    TYPE_NAMES,
    A,
    DnsConfig,
    Endpoint,
    Service,
    ServicePort,
)


def config(upstreams=()) -> DnsConfig:
    many = [Endpoint(f"10.244.7.{i}", hostname=f"member-{i}") for i in range(1, 101)]
    many6 = [Endpoint(ips=[f"fd00:10:244:9::{i:x}"], hostname=f"member-{i}") for i in range(1, 51)]
    return DnsConfig(
        nameservers=["10.96.0.10", "fd00:10:96::a"], upstreams=list(upstreams),
        services=[
            Service("default", "web", "ClusterIP", "10.96.0.20",
                    ports=[ServicePort(80, "http")], endpoints=[Endpoint("10.244.1.5")]),
            Service("prod", "db", "Headless", ports=[ServicePort(5432, "pg")],
                    endpoints=[Endpoint("10.244.1.6", hostname="db-0")]),
            Service("prod", "ext", "ExternalName", external_name="db.example.com"),
            Service("prod", "big", "Headless", ports=[ServicePort(80, "http")], endpoints=many),
            Service("prod", "mid", "Headless", endpoints=[Endpoint(f"10.244.8.{i}") for i in range(1, 41)]),
            # both families: a dual-stack ClusterIP, headless endpoints of both, one IPv6-only service
            Service("dual", "web", "ClusterIP", cluster_ips=["fd00:10:96::20", "10.96.0.30"],
                    ports=[ServicePort(80, "http")], endpoints=[Endpoint(ips=["10.244.2.5", "fd00:10:244:2::5"])]),
            Service("dual", "db", "Headless", ports=[ServicePort(5432, "pg")],
                    endpoints=[Endpoint(ips=["10.244.2.6", "fd00:10:244:2::6"], hostname="db-0"),
                               Endpoint(ips=["fd00:10:244:3::"])]),
            Service("dual", "big6", "Headless", ports=[ServicePort(80, "http")], endpoints=many6),
        ])


@pytest.fixture()
def state(tmp_path):
    path = tmp_path / "dns.json"
    config().dump(str(path))
    s = server.State(str(path))
    s.load()
    return s


def ask(state, name, rdtype="A", *, tcp=False, **kw) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **kw)
    raw = server.answer_query(state, q.to_wire(), tcp=tcp)
    assert isinstance(raw, bytes)
    r = dns.message.from_wire(raw)
    assert r.id == q.id and r.question[0].name.to_text() == q.question[0].name.to_text()
    return r


def test_a_answer_flags_and_case_echo(state):
    r = ask(state, "WeB.Default.svc.CLUSTER.local.", "A", use_edns=0)
    assert r.rcode() == dns.rcode.NOERROR
    assert r.flags & dns.flags.QR and r.flags & dns.flags.AA and r.flags & dns.flags.RD
    assert not r.flags & dns.flags.RA        # no upstreams: no recursion available
    assert str(r.question[0].name) == "WeB.Default.svc.CLUSTER.local."
    assert [rd.address for rd in r.answer[0]] == ["10.96.0.20"]
    assert r.answer[0].ttl == 5
    assert r.edns == 0 and r.payload == wire.EDNS_UDP_SIZE


def test_rd_is_copied_and_edns_only_when_asked(state):
    q = dns.message.make_query("web.default.svc.cluster.local.", "A", use_edns=False)
    q.flags &= ~dns.flags.RD
    r = dns.message.from_wire(server.answer_query(state, q.to_wire(), tcp=False))
    assert not r.flags & dns.flags.RD and r.edns == -1


def test_do_bit_is_copied(state):
    r = ask(state, "web.default.svc.cluster.local.", "A", want_dnssec=True)
    assert r.ednsflags & dns.flags.DO


def test_badvers(state):
    r = ask(state, "web.default.svc.cluster.local.", "A", use_edns=1)
    assert r.rcode() == dns.rcode.BADVERS


def test_nodata_and_nxdomain_carry_soa(state):
    r = ask(state, "web.default.svc.cluster.local.", "AAAA")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    assert r.authority[0].rdtype == dns.rdatatype.SOA
    assert str(r.authority[0][0].mname) == "ns.dns.cluster.local."
    r = ask(state, "nope.default.svc.cluster.local.", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN and r.authority[0].rdtype == dns.rdatatype.SOA


def test_srv_ptr_txt_cname(state):
    r = ask(state, "_pg._tcp.db.prod.svc.cluster.local.", "SRV")
    srv = r.answer[0][0]
    assert (srv.priority, srv.weight, srv.port, str(srv.target)) == (
        0, 100, 5432, "db-0.db.prod.svc.cluster.local.")
    assert r.additional[0][0].address == "10.244.1.6"
    r = ask(state, "20.0.96.10.in-addr.arpa.", "PTR")
    assert str(r.answer[0][0].target) == "web.default.svc.cluster.local."
    r = ask(state, "dns-version.cluster.local.", "TXT")
    assert r.answer[0][0].strings == (b"1.1.0",) and r.answer[0].ttl == 28800
    r = ask(state, "ext.prod.svc.cluster.local.", "A")
    assert str(r.answer[0][0].target) == "db.example.com."


def test_outside_zone_refused_without_upstreams(state):
    r = ask(state, "example.com.", "A")
    assert r.rcode() == dns.rcode.REFUSED and not r.flags & dns.flags.AA


def test_outside_zone_forwarded_with_upstreams(tmp_path):
    path = tmp_path / "dns.json"
    config(upstreams=["127.0.0.1:9"]).dump(str(path))
    s = server.State(str(path))
    s.load()
    q = dns.message.make_query("example.com.", "A")
    out = server.answer_query(s, q.to_wire(), tcp=False)
    assert isinstance(out, server.Upstream) and out.q.qname == "example.com."
    assert out.wire == q.to_wire() and out.chase is None
    r = dns.message.from_wire(server.answer_query(s, dns.message.make_query(
        "web.default.svc.cluster.local.", "A").to_wire(), tcp=False))
    assert r.flags & dns.flags.RA


def test_forwarded_answers_are_truncated_to_the_udp_limit(tmp_path):
    """An upstream's big answer is not relayed over UDP beyond 512 bytes (no EDNS) or
    min(client's EDNS size, ours): TC=1 and the question, so the client asks over TCP."""
    path = tmp_path / "dns.json"
    config(upstreams=["127.0.0.1:9"]).dump(str(path))
    s = server.State(str(path))
    s.load()
    for use_edns, payload, limit in ((False, 512, 512), (0, 65535, wire.EDNS_UDP_SIZE), (0, 800, 800)):
        q = dns.message.make_query("big.example.com.", "TXT", use_edns=use_edns, payload=payload,
                                   want_dnssec=use_edns is not False)
        up = server.answer_query(s, q.to_wire(), tcp=False)
        reply = dns.message.make_response(q)
        reply.answer.append(dns.rrset.from_text("big.example.com.", 60, "IN", "TXT",
                                                *(f'"{i:0>200}"' for i in range(20))))
        big = reply.to_wire(max_size=65535)
        raw = server.upstream_reply(s, up, big, tcp=False)
        r = dns.message.from_wire(raw)
        assert len(big) > 4000 and len(raw) <= limit and r.flags & dns.flags.TC and r.id == q.id and not r.answer
        assert str(r.question[0].name) == "big.example.com." and r.edns == (-1 if use_edns is False else 0)
        over_tcp = dns.message.from_wire(server.upstream_reply(s, up, big, tcp=True))
        assert len(over_tcp.answer[0]) == 20
        small = dns.message.make_response(q)
        small.answer.append(dns.rrset.from_text("big.example.com.", 60, "IN", "TXT", '"hi"'))
        assert dns.message.from_wire(server.upstream_reply(s, up, small.to_wire(), tcp=False)).answer


def test_external_name_is_chased_through_upstreams(tmp_path):
    path = tmp_path / "dns.json"
    config(upstreams=["127.0.0.1:9"]).dump(str(path))
    s = server.State(str(path))
    s.load()
    q = dns.message.make_query("Ext.prod.svc.cluster.local.", "A", use_edns=0)
    up = server.answer_query(s, q.to_wire(), tcp=False)
    assert isinstance(up, server.Upstream) and up.chase is not None
    ask_up = dns.message.from_wire(up.wire)
    assert str(ask_up.question[0].name) == "db.example.com." and ask_up.flags & dns.flags.RD
    reply = dns.message.make_response(ask_up)
    reply.answer.append(dns.rrset.from_text("db.example.com.", 60, "IN", "CNAME",
                                            "real.example.com."))
    reply.answer.append(dns.rrset.from_text("real.example.com.", 60, "IN", "A", "192.0.2.7"))
    r = dns.message.from_wire(server.upstream_reply(s, up, reply.to_wire(), tcp=False))
    assert r.id == q.id and r.rcode() == dns.rcode.NOERROR and r.edns == 0
    assert [(str(rr.name), rr.rdtype) for rr in r.answer] == [
        ("Ext.prod.svc.cluster.local.", dns.rdatatype.CNAME),
        ("db.example.com.", dns.rdatatype.CNAME), ("real.example.com.", dns.rdatatype.A)]
    assert r.answer[-1][0].address == "192.0.2.7"
    # NXDOMAIN upstream: the CNAME and NXDOMAIN (RFC 6604); silence: just the CNAME
    reply = dns.message.make_response(ask_up)
    reply.set_rcode(dns.rcode.NXDOMAIN)
    r = dns.message.from_wire(server.upstream_reply(s, up, reply.to_wire(), tcp=False))
    assert r.rcode() == dns.rcode.NXDOMAIN and len(r.answer) == 1
    r = dns.message.from_wire(server.upstream_reply(s, up, None, tcp=False))
    assert r.rcode() == dns.rcode.NOERROR and len(r.answer) == 1
    r = dns.message.from_wire(server.upstream_reply(s, up, b"garbage", tcp=False))
    assert r.rcode() == dns.rcode.NOERROR and len(r.answer) == 1


def test_truncation(state):
    name = "big.prod.svc.cluster.local."    # 100 addresses: ~1.7 kB
    r = ask(state, name, "A", use_edns=False)
    assert r.flags & dns.flags.TC and not r.answer
    r = ask(state, name, "A", use_edns=0, payload=512)
    assert r.flags & dns.flags.TC and r.edns == 0
    r = ask(state, name, "A", use_edns=0, payload=4096)     # over our own EDNS size: truncated all the same
    assert r.flags & dns.flags.TC and not r.answer and r.payload == wire.EDNS_UDP_SIZE
    r = ask(state, name, "A", use_edns=False, tcp=True)
    assert not r.flags & dns.flags.TC and len(r.answer[0]) == 100
    r = ask(state, name, "A", use_edns=0, payload=4096, tcp=True)
    assert not r.flags & dns.flags.TC and len(r.answer[0]) == 100
    name = "mid.prod.svc.cluster.local."    # 40 addresses: between 512 and 1232 bytes
    r = ask(state, name, "A", use_edns=0, payload=4096)
    assert not r.flags & dns.flags.TC and len(r.answer[0]) == 40
    r = ask(state, name, "A", use_edns=0, payload=600)
    assert r.flags & dns.flags.TC and not r.answer


def test_aaaa_answers_are_truncated_like_a_ones(state):
    name = "big6.dual.svc.cluster.local."    # 50 IPv6 addresses: ~1.4 kB
    r = ask(state, name, "AAAA", use_edns=False)
    assert r.flags & dns.flags.TC and not r.answer
    r = ask(state, name, "AAAA", use_edns=0, payload=4096)
    assert r.flags & dns.flags.TC and not r.answer
    r = ask(state, name, "AAAA", use_edns=0, payload=4096, tcp=True)
    assert not r.flags & dns.flags.TC and len(r.answer[0]) == 50
    assert {rd.address for rd in r.answer[0]} == {f"fd00:10:244:9::{i:x}" for i in range(1, 51)}
    # the same name's A: NODATA, small, never truncated
    r = ask(state, name, "A", use_edns=False)
    assert not r.flags & dns.flags.TC and not r.answer and r.rcode() == dns.rcode.NOERROR


def test_dual_stack_answers_on_the_wire(state):
    r = ask(state, "WEB.dual.svc.cluster.local.", "AAAA")
    assert [rd.address for rd in r.answer[0]] == ["fd00:10:96::20"]
    r = ask(state, "_http._tcp.web.dual.svc.cluster.local.", "SRV", use_edns=0)
    assert sorted((rrset.rdtype, rd.address) for rrset in r.additional for rd in rrset
                  if rrset.rdtype != dns.rdatatype.OPT) == [(dns.rdatatype.A, "10.96.0.30"),
                                                            (dns.rdatatype.AAAA, "fd00:10:96::20")]
    ptr = dns.message.make_query(dns.reversename.from_address("fd00:10:244:3::"), "PTR")
    r = dns.message.from_wire(server.answer_query(state, ptr.to_wire(), tcp=False))
    assert [rd.target.to_text() for rd in r.answer[0]] == ["fd00-10-244-3--0.db.dual.svc.cluster.local."]


def test_udp_answers_bounded_whatever_the_query(state):
    """Amplification: no UDP answer exceeds 512 bytes without EDNS or our own EDNS size
    with it, even to a client advertising 65535; so answer/query stays under
    1232/len(query) (it was ~70x for the SRV of a 100-endpoint service)."""
    rs = state.rs
    worst = 0.0
    for name in [n for n in (*rs.nodes, *rs.reverse) if "member-" not in n or "member-1." in n]:
        for rdtype in (A, AAAA, SRV, TXT, PTR, CNAME, SOA, NS, ANY):
            for use_edns, limit in ((False, 512), (0, wire.EDNS_UDP_SIZE)):
                q = dns.message.make_query(name, rdtype, use_edns=use_edns, payload=65535,
                                           want_dnssec=use_edns is not False).to_wire()
                raw = server.answer_query(state, q, tcp=False)
                assert len(raw) <= limit, (name, rdtype, use_edns)
                worst = max(worst, len(raw) / len(q))
    assert 1 < worst <= wire.EDNS_UDP_SIZE / 40


def test_any_gets_the_minimal_answer_of_rfc8482(state):
    for name in ("web.default.svc.cluster.local.", "big.prod.svc.cluster.local.", "svc.cluster.local.",
                 "_http._tcp.big.prod.svc.cluster.local."):
        q = dns.message.make_query(name, "ANY", use_edns=0, payload=65535)
        raw = server.answer_query(state, q.to_wire(), tcp=False)
        r = dns.message.from_wire(raw)
        assert r.rcode() == dns.rcode.NOERROR and not r.flags & dns.flags.TC
        assert [rrset.to_text() for rrset in r.answer] == [f'{name} 8482 IN HINFO "RFC8482" ""']
        assert not r.authority and not r.additional
        assert len(raw) < 2 * len(q.to_wire())
    r = ask(state, "ext.prod.svc.cluster.local.", "ANY")       # an alias: its CNAME, one RRset
    assert [rr.rdtype for rr in r.answer] == [dns.rdatatype.CNAME]
    r = ask(state, "20.0.96.10.in-addr.arpa.", "ANY")            # a reverse name: its PTR
    assert [rr.rdtype for rr in r.answer] == [dns.rdatatype.PTR]
    assert ask(state, "nope.default.svc.cluster.local.", "ANY").rcode() == dns.rcode.NXDOMAIN


def test_other_classes_and_zone_transfers_refused(state):
    r = ask(state, "web.default.svc.cluster.local.", "A", rdclass="CH")
    assert r.rcode() == dns.rcode.REFUSED
    r = ask(state, "cluster.local.", "AXFR")
    assert r.rcode() == dns.rcode.REFUSED


def test_unusual_types_in_zone(state):
    r = ask(state, "web.default.svc.cluster.local.", "MX")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer      # NODATA
    r = ask(state, "nope.default.svc.cluster.local.", "HTTPS")
    assert r.rcode() == dns.rcode.NXDOMAIN
    r = ask(state, "web.default.svc.cluster.local.", "ANY")
    assert [rr.rdtype for rr in r.answer] == [dns.rdatatype.HINFO]


def test_malformed(state):
    q = dns.message.make_query("web.default.svc.cluster.local.", "A").to_wire()
    assert server.answer_query(state, b"", tcp=False) is None
    assert server.answer_query(state, q[:11], tcp=False) is None
    response = bytes([q[0], q[1], q[2] | 0x80]) + q[3:]
    assert server.answer_query(state, response, tcp=False) is None      # QR set: drop
    notify = bytes([q[0], q[1], (q[2] & 0x87) | (4 << 3)]) + q[3:]
    r = dns.message.from_wire(server.answer_query(state, notify, tcp=False),
                              question_only=True)
    assert r.rcode() == dns.rcode.NOTIMP and r.opcode() == dns.opcode.NOTIFY
    two = q[:4] + b"\x00\x02" + q[6:]
    raw = server.answer_query(state, two, tcp=False)
    assert raw[:2] == q[:2] and raw[3] & 0xF == dns.rcode.FORMERR
    raw = server.answer_query(state, q[:20], tcp=False)                 # truncated name
    assert raw[3] & 0xF == dns.rcode.FORMERR


def test_fuzz_never_raises(state):
    rnd = random.Random(1234)
    seeds = [dns.message.make_query(n, t, use_edns=e).to_wire()
             for n in ("web.default.svc.cluster.local.", "_pg._tcp.db.prod.svc.cluster.local.",
                       "example.com.", "20.0.96.10.in-addr.arpa.")
             for t in ("A", "SRV", "PTR") for e in (False, 0)]
    for i in range(20000):
        kind = i % 4
        if kind == 0:
            pkt = rnd.randbytes(rnd.randrange(0, 80))
        elif kind == 1:
            s = rnd.choice(seeds)
            pkt = s[:rnd.randrange(len(s) + 1)]
        else:
            pkt = bytearray(rnd.choice(seeds))
            for _ in range(rnd.randrange(1, 6)):
                pkt[rnd.randrange(len(pkt))] = rnd.randrange(256)
            pkt = bytes(pkt)
        out = server.answer_query(state, pkt, tcp=bool(i & 1))
        if isinstance(out, bytes):
            assert out[:2] == pkt[:2] and out[2] & 0x80
    # still answers properly afterwards
    assert ask(state, "web.default.svc.cluster.local.", "A").answer


def test_memory_is_bounded_under_a_stream_of_new_names(tmp_path):
    """Every new NXDOMAIN/NODATA/REFUSED name used to add an answer and a memo entry
    for good (13.5 MB -> 145 MB in 15 s from one pod). N >> cap names later, the
    caches sit at their caps, and every answer, old or new, is still right."""
    path = tmp_path / "dns.json"
    config().dump(str(path))
    state = server.State(str(path), max_dynamic=50, max_memo=20)
    state.load()
    static = len(state.entries)
    rnd = random.Random(1)
    asked = []
    for i in range(2000):
        label = "".join(rnd.choice("abcdefghij") for _ in range(rnd.randrange(1, 12)))
        name, rdtype, rcode = [
            (f"{label}.n{i}.svc.cluster.local.", "A", dns.rcode.NXDOMAIN),       # negative, memo-shared
            (f"{label}.default.svc.cluster.local.", "AAAA", dns.rcode.NXDOMAIN),
            ("web.default.svc.cluster.local.", 1000 + i, dns.rcode.NOERROR),     # NODATA, every type
            (f"{label}.example.com.", "A", dns.rcode.REFUSED),                    # outside, no upstreams
        ][i % 4]
        asked.append((name, rdtype, rcode))
        r = ask(state, name, rdtype)
        assert r.rcode() == rcode and not r.answer, (name, rdtype)
        assert len(state.dynamic) <= 50 and len(state.memo) <= 20
    assert len(state.dynamic) == 50 and len(state.entries) == static + 50
    for name, rdtype, rcode in asked[:20] + asked[-20:]:       # evicted long ago, and still kept
        r = ask(state, name, rdtype)
        assert r.rcode() == rcode and not r.answer, (name, rdtype)
        if rcode == dns.rcode.NXDOMAIN:
            assert str(r.authority[0][0].mname) == "ns.dns.cluster.local."
    assert [rd.address for rd in ask(state, "web.default.svc.cluster.local.", "A").answer[0]] == ["10.96.0.20"]
    assert len(state.dynamic) == 50 and len(state.entries) == static + 50


def test_the_oldest_answer_is_evicted_and_a_used_one_kept(tmp_path):
    path = tmp_path / "dns.json"
    config().dump(str(path))
    state = server.State(str(path), max_dynamic=3)
    state.load()
    keys = []
    for i in range(3):
        q = dns.message.make_query(f"n{i}.default.svc.cluster.local.", "A").to_wire()
        server.answer_query(state, q, tcp=False)
        keys.append(q[12:].lower())
    server.answer_query(state, dns.message.make_query("n0.default.svc.cluster.local.", "A").to_wire(), tcp=False)
    server.answer_query(state, dns.message.make_query("n3.default.svc.cluster.local.", "A").to_wire(), tcp=False)
    assert keys[0] in state.entries and keys[1] not in state.entries and keys[2] in state.entries


def test_lru_keeps_the_most_recently_used():
    lru = server.LRU(2)
    lru["a"], lru["b"] = 1, 2
    assert lru.get("a") == 1
    lru["c"] = 3
    assert list(lru) == ["a", "c"] and lru.get("b") is None


def test_exact_variants_are_the_slow_path_answers(state):
    for name in ("web.default.svc.cluster.local.", "big.prod.svc.cluster.local.",
                 "db-0.db.prod.svc.cluster.local.", "nope.default.svc.cluster.local."):
        for ad in (False, True):
            msg = dns.message.make_query(name, "A", use_edns=False)
            if ad:
                msg.flags |= dns.flags.AD
            q = msg.to_wire()
            slow = server.answer_query(state, q, tcp=False)
            if name.startswith("nope"):
                assert q[2:] not in state.exact       # computed on demand, not precomputed
            else:
                assert q[:2] + state.exact[q[2:]] == slow, (name, ad)


def test_query_parser_reads_edns():
    q = dns.message.make_query("x.", "A", use_edns=0, payload=1400, want_dnssec=True)
    parsed = wire.parse_query(q.to_wire())
    assert parsed.edns == (1400, 0, 0, True) and parsed.qname == "x." and parsed.qtype == 1


def test_negative_answers_shared_only_when_identical(state):
    # Same length, but only the first has a suffix the SOA's names compress against.
    for name in ("x.dns.cluster.local.", "x.abc.cluster.local.", "a.hostmaster.cluster.local.",
                 "a.hostmastex.cluster.local.", "ns.dns.cluster.local.", "nx.dns.cluster.local."):
        for rdtype in ("TXT", "SRV"):
            r = ask(state, name, rdtype)
            soa = r.authority[0][0]
            assert (str(soa.mname), str(soa.rname)) == (
                "ns.dns.cluster.local.", "hostmaster.cluster.local."), (name, rdtype)


def _rr_texts(rrs) -> set[str]:
    out = set()
    for owner, rtype, ttl, rdata in rrs:
        if rtype in (TXT, HINFO):
            text = " ".join(f'"{x}"' for x in rdata)
        elif rtype in (SRV, SOA):
            text = " ".join(str(x) for x in rdata)
        else:
            text = str(rdata)
        out.add(f"{owner} {ttl} IN {TYPE_NAMES[rtype]} {text}".lower())
    return out


def _msg_texts(section) -> set[str]:
    return {line.lower() for rrset in section for line in rrset.to_text().splitlines()}


def test_every_answer_decodes_to_what_lookup_says(state):
    """Every name of the zone (and some that are not), every type, odd letter case:
    the bytes the server sends decode to exactly the record builder's answer."""
    rs = state.rs
    names = [n for n in (*rs.nodes, *rs.reverse)   # the 100- and 50-member services: a sample
             if not (n.startswith("member-") or ".7.244.10." in n or ".9.0.0.0.4.4.2.0." in n)
             or n[7:9] in ("1.", "2.") or n.startswith("1.0.0.0.0.0.0.0.")]
    names += [
        "nope.default.svc.cluster.local.", "x.dns.cluster.local.", "a.b.c.d.cluster.local."]
    rnd = random.Random(7)
    for name in names:
        for rdtype in (A, AAAA, SRV, TXT, PTR, CNAME, SOA, NS, 15, ANY):
            expected = rs.lookup(name, rdtype)
            if expected.outside or expected.chase:
                continue
            odd = "".join(c.upper() if rnd.random() < 0.3 else c for c in name)
            for use_edns, tcp in ((False, True), (0, False), (False, False)):
                r = ask(state, odd, rdtype, use_edns=use_edns, payload=65000, tcp=tcp)
                if r.flags & dns.flags.TC:
                    assert not tcp and not r.answer
                    continue
                assert r.rcode() == expected.rcode, (name, rdtype)
                assert _msg_texts(r.answer) == _rr_texts(expected.answer), (name, rdtype)
                assert _msg_texts(r.authority) == _rr_texts(expected.authority), (name, rdtype)
                assert _msg_texts(r.additional) == _rr_texts(expected.additional), (name, rdtype)
