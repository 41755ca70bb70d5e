"""The DNS record builder against spec 1.1.0 and CoreDNS's NXDOMAIN/NODATA rules."""

from __future__ import annotations

import json

import pytest

from labkit.dns.records import (
    AAAA,
    ANY,
    CNAME,
    HINFO,
    NOERROR,
    NS,
    NXDOMAIN,
    PTR,
    SOA,
    SRV,
    TXT,
    A,
    ConfigError,
    DnsConfig,
    Endpoint,
    Service,
    ServicePort,
    build_records,
    parse_upstream,
)

Z = "cluster.local."


def cfg() -> DnsConfig:
    return DnsConfig(
        zone="cluster.local",
        nameservers=["10.96.0.10"],
        namespaces=["empty"],
        upstreams=["192.0.2.53"],
        services=[
            Service("default", "web", "ClusterIP", "10.96.0.20",
                    ports=[ServicePort(80, "http"), ServicePort(443, None)],
                    endpoints=[Endpoint("10.244.1.5", pod="web-1"),
                               Endpoint("10.244.2.5", pod="web-2", ready=False)]),
            Service("default", "np", "NodePort", "10.96.0.21",
                    ports=[ServicePort(53, "dns", "UDP"), ServicePort(53, "dns-tcp", "TCP")]),
            Service("prod", "db", "Headless",
                    ports=[ServicePort(5432, "pg", target_port=15432)],
                    endpoints=[Endpoint("10.244.1.6", hostname="db-0", pod="db-0"),
                               Endpoint("10.244.2.6", hostname="db-1", pod="db-1"),
                               Endpoint("10.244.3.6", pod="db-x"),
                               Endpoint("10.244.3.7", hostname="db-2", ready=False)]),
            Service("prod", "nobody", "Headless", ports=[ServicePort(80, "http")],
                    endpoints=[Endpoint("10.244.3.9", ready=False)]),
            Service("prod", "ext", "ExternalName", external_name="db.example.com"),
            Service("prod", "alias", "ExternalName", external_name="web.default.svc.cluster.local"),
            Service("v6", "web6", "ClusterIP", "fd00:96::20", ports=[ServicePort(80, "http")]),
        ])


@pytest.fixture(scope="module")
def rs():
    return build_records(cfg(), serial=42)


def rdatas(ans):
    return sorted(str(rr[3]) for rr in ans.answer)


def is_nodata(ans):
    return ans.rcode == NOERROR and not ans.answer and ans.authority[0][1] == SOA


def is_nxdomain(ans):
    return ans.rcode == NXDOMAIN and not ans.answer and ans.authority[0][1] == SOA


def test_dns_version_txt(rs):
    ans = rs.lookup("dns-version.cluster.local", TXT)
    assert ans.answer == [(f"dns-version.{Z}", TXT, 28800, ("1.1.0",))]
    assert is_nodata(rs.lookup("dns-version.cluster.local", A))


def test_clusterip_a_and_aaaa_nodata(rs):
    ans = rs.lookup("web.default.svc.cluster.local", A)
    assert ans.rcode == NOERROR and rdatas(ans) == ["10.96.0.20"]
    assert ans.answer[0][2] == 5
    assert is_nodata(rs.lookup("web.default.svc.cluster.local", AAAA))
    assert is_nodata(rs.lookup("web.default.svc.cluster.local", TXT))
    assert rdatas(rs.lookup("np.default.svc.cluster.local", A)) == ["10.96.0.21"]


def test_ipv6_service_is_aaaa(rs):
    assert rdatas(rs.lookup("web6.v6.svc.cluster.local", AAAA)) == ["fd00:96::20"]
    assert is_nodata(rs.lookup("web6.v6.svc.cluster.local", A))
    ans = rs.lookup(
        "0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.0.d.f.ip6.arpa", PTR)
    assert rdatas(ans) == [f"web6.v6.svc.{Z}"]


def test_lookup_is_case_insensitive(rs):
    assert rdatas(rs.lookup("WEB.Default.SVC.cluster.LOCAL.", A)) == ["10.96.0.20"]


def test_srv_named_ports_clusterip(rs):
    ans = rs.lookup("_http._tcp.web.default.svc.cluster.local", SRV)
    assert [rr[3] for rr in ans.answer] == [(0, 100, 80, f"web.default.svc.{Z}")]
    assert [rr[3] for rr in ans.additional] == ["10.96.0.20"]
    # The unnamed port 443 has no _port._proto name.
    assert is_nxdomain(rs.lookup("_443._tcp.web.default.svc.cluster.local", SRV))
    assert is_nxdomain(rs.lookup("_http._udp.web.default.svc.cluster.local", SRV))
    udp = rs.lookup("_dns._udp.np.default.svc.cluster.local", SRV)
    assert [rr[3][2] for rr in udp.answer] == [53]
    # the SRV name exists with SRV only
    assert is_nodata(rs.lookup("_http._tcp.web.default.svc.cluster.local", A))


def test_srv_on_service_name_lists_all_ports_like_coredns(rs):
    ans = rs.lookup("web.default.svc.cluster.local", SRV)
    assert sorted(rr[3] for rr in ans.answer) == [(0, 50, 80, f"web.default.svc.{Z}"),
                                                  (0, 50, 443, f"web.default.svc.{Z}")]


def test_headless_a_per_ready_endpoint(rs):
    ans = rs.lookup("db.prod.svc.cluster.local", A)
    assert rdatas(ans) == ["10.244.1.6", "10.244.2.6", "10.244.3.6"]
    assert rdatas(rs.lookup("db-0.db.prod.svc.cluster.local", A)) == ["10.244.1.6"]
    # no hostname: CoreDNS's system-assigned id, the dashed IP
    assert rdatas(rs.lookup("10-244-3-6.db.prod.svc.cluster.local", A)) == ["10.244.3.6"]
    # not ready: no records at all
    assert is_nxdomain(rs.lookup("db-2.db.prod.svc.cluster.local", A))


def test_headless_srv_targets_endpoints_with_target_port(rs):
    ans = rs.lookup("_pg._tcp.db.prod.svc.cluster.local", SRV)
    assert sorted(rr[3] for rr in ans.answer) == [
        (0, 33, 15432, f"10-244-3-6.db.prod.svc.{Z}"),
        (0, 33, 15432, f"db-0.db.prod.svc.{Z}"),
        (0, 33, 15432, f"db-1.db.prod.svc.{Z}"),
    ]
    assert sorted(rr[3] for rr in ans.additional) == ["10.244.1.6", "10.244.2.6", "10.244.3.6"]


def test_headless_without_ready_endpoints_is_nxdomain_like_coredns(rs):
    assert is_nxdomain(rs.lookup("nobody.prod.svc.cluster.local", A))
    assert is_nxdomain(rs.lookup("_http._tcp.nobody.prod.svc.cluster.local", SRV))


def test_clusterip_none_is_headless():
    for ip in (None, "None"):
        c = DnsConfig(services=[Service("a", "h", "ClusterIP", ip,
                                        endpoints=[Endpoint("10.244.0.9", hostname="x")])])
        c.validate()
        assert rdatas(build_records(c).lookup("h.a.svc.cluster.local", A)) == ["10.244.0.9"]


def test_dump_refuses_an_invalid_config(tmp_path):
    c = DnsConfig(services=[Service("a", "B_ad", "ClusterIP", "10.0.0.1")])
    with pytest.raises(ConfigError, match="services\\[0\\].name"):
        c.dump(str(tmp_path / "x.json"))
    assert not list(tmp_path.iterdir())


def test_publish_not_ready_addresses():
    c = DnsConfig(services=[Service("a", "h", "Headless", endpoints=[
        Endpoint("10.244.0.9", hostname="x", ready=False)], publish_not_ready_addresses=True)])
    assert rdatas(build_records(c).lookup("x.h.a.svc.cluster.local", A)) == ["10.244.0.9"]


def test_ptr_for_cluster_ips_and_headless_endpoints(rs):
    assert rdatas(rs.lookup("20.0.96.10.in-addr.arpa", PTR)) == [f"web.default.svc.{Z}"]
    assert rdatas(rs.lookup("6.1.244.10.in-addr.arpa.", PTR)) == [f"db-0.db.prod.svc.{Z}"]
    assert rdatas(rs.lookup("6.3.244.10.in-addr.arpa.", PTR)) == [
        f"10-244-3-6.db.prod.svc.{Z}"]
    # not-ready headless endpoint, and endpoints of ClusterIP services: no PTR of ours
    assert rs.lookup("7.3.244.10.in-addr.arpa.", PTR).outside
    assert rs.lookup("5.1.244.10.in-addr.arpa.", PTR).outside
    # other types on our reverse names fall through (forwarded), as in CoreDNS
    assert rs.lookup("20.0.96.10.in-addr.arpa", A).outside


def test_external_name_cname(rs):
    ans = rs.lookup("ext.prod.svc.cluster.local", A)
    assert ans.answer == [(f"ext.prod.svc.{Z}", CNAME, 5, "db.example.com.")]
    assert ans.chase == "db.example.com."
    assert rs.lookup("ext.prod.svc.cluster.local", CNAME).answer == ans.answer
    assert rs.lookup("ext.prod.svc.cluster.local", CNAME).chase is None


def test_external_name_to_cluster_name_is_followed(rs):
    ans = rs.lookup("alias.prod.svc.cluster.local", A)
    assert [rr[1] for rr in ans.answer] == [CNAME, A]
    assert ans.answer[1][3] == "10.96.0.20" and ans.chase is None


def test_nodata_for_names_with_children_and_coredns_specials(rs):
    for name in ("cluster.local", "svc.cluster.local", "pod.cluster.local",
                 "default.svc.cluster.local", "prod.svc.cluster.local",
                 "empty.svc.cluster.local", "kube-system.svc.cluster.local",
                 "_tcp.web.default.svc.cluster.local", "dns.cluster.local"):
        assert is_nodata(rs.lookup(name, A)), name


def test_nxdomain_for_unknown_names(rs):
    for name in ("nope.default.svc.cluster.local", "web.nope.svc.cluster.local",
                 "nope.svc.cluster.local", "x.web.default.svc.cluster.local",
                 "foo.cluster.local", "web.default.cluster.local",
                 "a.b._http._tcp.web.default.svc.cluster.local",
                 "10-244-2-5.web.default.svc.cluster.local"):
        for qtype in (A, AAAA, SRV, TXT):
            assert is_nxdomain(rs.lookup(name, qtype)), (name, qtype)


def test_soa_and_ns_at_apex(rs):
    soa = rs.lookup("cluster.local", SOA).answer
    assert soa == [(Z, SOA, 5, (f"ns.dns.{Z}", f"hostmaster.{Z}", 42, 7200, 1800, 86400, 5))]
    ns = rs.lookup("cluster.local", NS)
    assert rdatas(ns) == [f"ns.dns.{Z}"] and rdatas_add(ns) == ["10.96.0.10"]
    assert rdatas(rs.lookup("ns.dns.cluster.local", A)) == ["10.96.0.10"]


def rdatas_add(ans):
    return sorted(str(rr[3]) for rr in ans.additional)


def test_any_gets_one_synthesized_hinfo(rs):
    """RFC 8482: not every RRset (an amplifier), one HINFO "RFC8482" (as CoreDNS's `any`)."""
    ans = rs.lookup("web.default.svc.cluster.local", ANY)
    assert ans.answer == [("web.default.svc.cluster.local.", HINFO, 8482, ("RFC8482", ""))]
    assert not ans.additional and not ans.authority


def test_outside_zone(rs):
    assert rs.lookup("example.com", A).outside
    assert rs.lookup("local", A).outside
    assert rs.lookup(".", NS).outside
    assert rs.lookup("1.2.3.4.in-addr.arpa", PTR).outside
    assert rs.upstreams == [("192.0.2.53", 53)]


def test_json_round_trip(tmp_path):
    c = cfg()
    path = tmp_path / "dns.json"
    c.dump(str(path))
    assert DnsConfig.load(str(path)) == c
    data = json.loads(path.read_text())
    assert data["services"][0]["ports"][0] == {
        "name": "http", "port": 80, "protocol": "TCP", "target_port": None}
    assert list(tmp_path.iterdir()) == [path]


def test_minimal_json():
    c = DnsConfig.from_json('{"services": [{"namespace": "a", "name": "b", '
                            '"cluster_ip": "10.96.0.5"}]}')
    assert c.zone == "cluster.local" and c.services[0].type == "ClusterIP"
    assert rdatas(build_records(c).lookup("b.a.svc.cluster.local", A)) == ["10.96.0.5"]


@pytest.mark.parametrize("data, needle", [
    ({"zone": "bad_zone!"}, "zone:"),
    ({"services": [{"namespace": "a", "name": "B", "cluster_ip": "10.0.0.1"}]},
     "services[0].name"),
    ({"services": [{"namespace": "a", "name": "b", "type": "NodePort"}]},
     "services[0].cluster_ip: required"),
    ({"services": [{"namespace": "a", "name": "b", "type": "Headless",
                    "cluster_ip": "10.0.0.1"}]}, "must be null for type Headless"),
    ({"services": [{"namespace": "a", "name": "b", "cluster_ip": "10.0.0.300"}]},
     "not an IP address"),
    ({"services": [{"namespace": "a", "name": "b", "type": "Weird", "cluster_ip": "10.0.0.1"}]},
     "services[0].type"),
    ({"services": [{"namespace": "a", "name": "b", "type": "ExternalName"}]},
     "external_name: required"),
    ({"services": [{"namespace": "a", "name": "b", "cluster_ip": "10.0.0.1",
                    "ports": [{"port": 80, "protocol": "ICMP"}]}]}, "ports[0].protocol"),
    ({"services": [{"namespace": "a", "name": "b", "cluster_ip": "10.0.0.1",
                    "ports": [{"port": 80, "name": "Has_Underscore"}]}]}, "ports[0].name"),
    ({"services": [{"namespace": "a", "name": "b", "cluster_ip": "10.0.0.1",
                    "endpoints": [{"ip": "10.0.0.2", "hostname": "a.b"}]}]}, "hostname"),
    ({"upstreams": ["dns.google"]}, "upstreams[0]"),
    ({"ttl": "5"}, "ttl: wrong type"),
    ({"services": [{"namespace": "a", "name": "b", "cluster_ip": "10.0.0.1", "colour": 1}]},
     "services[0].colour: unknown field"),
    ([], "top level: must be an object"),
])
def test_bad_config_names_the_field(data, needle):
    with pytest.raises(ConfigError) as e:
        DnsConfig.from_dict(data, "dns.json")
    assert needle in str(e.value)
    assert str(e.value).startswith("dns.json: ")


def test_all_problems_reported_at_once():
    with pytest.raises(ConfigError) as e:
        DnsConfig.from_dict({"zone": "!", "ttl": -1, "upstreams": ["x"]})
    assert len(e.value.problems) == 3


def test_bad_json_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid JSON"):
        DnsConfig.from_json("{")
    with pytest.raises(ConfigError, match="cannot read"):
        DnsConfig.load(str(tmp_path / "missing.json"))


def test_parse_upstream():
    assert parse_upstream("10.0.0.1") == ("10.0.0.1", 53)
    assert parse_upstream("10.0.0.1:5353") == ("10.0.0.1", 5353)
    assert parse_upstream("fd00::1") == ("fd00::1", 53)
    assert parse_upstream("[fd00::1]:5353") == ("fd00::1", 5353)
    for bad in ("x", "10.0.0.1:0", "[fd00::1]x"):
        with pytest.raises(ValueError):
            parse_upstream(bad)


def test_builder_answers_for_every_service_of_a_big_cluster():
    services = [Service("ns%d" % (i % 10), f"s{i}", "ClusterIP", f"10.96.{i // 250}.{i % 250}",
                        ports=[ServicePort(80, "http")],
                        endpoints=[Endpoint(f"10.244.{i // 250}.{i % 250}")])
                for i in range(2000)]
    rs = build_records(DnsConfig(services=services))  # how fast is for the benchmarks, not a unit test
    assert rdatas(rs.lookup("s1999.ns9.svc.cluster.local", A)) == ["10.96.7.249"]
    assert rdatas(rs.lookup("s0.ns0.svc.cluster.local", A)) == ["10.96.0.0"]
    assert rdatas(rs.lookup("s1234.ns4.svc.cluster.local", A)) == ["10.96.4.234"]


def test_pod_records_insecure_like_kubeadm_corefile(rs):
    ans = rs.lookup("10-244-1-9.default.pod.cluster.local", A)
    assert ans.answer == [(f"10-244-1-9.default.pod.{Z}", A, 5, "10.244.1.9")]
    assert is_nodata(rs.lookup("10-244-1-9.default.pod.cluster.local", AAAA))
    assert rdatas(rs.lookup("fd00--1.prod.pod.cluster.local", AAAA)) == ["fd00::1"]
    assert is_nodata(rs.lookup("default.pod.cluster.local", A))
    assert is_nxdomain(rs.lookup("10-244-1-9.nope.pod.cluster.local", A))
    assert is_nxdomain(rs.lookup("not-an-ip.default.pod.cluster.local", A))
    assert is_nxdomain(rs.lookup("x.10-244-1-9.default.pod.cluster.local", A))


def test_pod_records_disabled():
    c = cfg()
    c.pods = "disabled"
    r = build_records(c)
    assert is_nxdomain(r.lookup("10-244-1-9.default.pod.cluster.local", A))
    assert is_nxdomain(r.lookup("default.pod.cluster.local", A))
    assert is_nodata(r.lookup("pod.cluster.local", A))


def test_service_port_names_are_dns_labels():
    c = DnsConfig.from_dict({"services": [{
        "namespace": "a", "name": "b", "cluster_ip": "10.96.0.5",
        "ports": [{"name": "http-metrics-endpoint", "port": 9100}, {"name": "", "port": 80}]}]})
    rs = build_records(c)
    ans = rs.lookup("_http-metrics-endpoint._tcp.b.a.svc.cluster.local", SRV)
    assert [rr[3][2] for rr in ans.answer] == [9100]
    assert sorted(rr[3][2] for rr in rs.lookup("b.a.svc.cluster.local", SRV).answer) == [80, 9100]


# ---------------------------------------------------------------------------- both families


def dualstack() -> DnsConfig:
    return DnsConfig(
        nameservers=["10.96.0.10", "fd00:10:96::a"],
        services=[
            Service("default", "web", "ClusterIP", cluster_ips=["10.96.0.20", "fd00:10:96::20"],
                    ports=[ServicePort(80, "http")],
                    endpoints=[Endpoint(ips=["10.244.1.5", "fd00:10:244:1::5"], pod="web-1")]),
            Service("default", "six", "NodePort", cluster_ips=["FD00:10:96:0::21", "10.96.0.21"],
                    ports=[ServicePort(53, "dns", "UDP")]),
            Service("default", "v4", "ClusterIP", "10.96.0.22"),
            Service("prod", "db", "Headless", ports=[ServicePort(5432, "pg", target_port=15432)],
                    endpoints=[Endpoint(ips=["10.244.1.6", "fd00:10:244:1::6"], hostname="db-0"),
                               Endpoint(ips=["fd00:10:244:2::"]),
                               Endpoint(ips=["10.244.3.7", "fd00:10:244:3::7"], hostname="db-2",
                                        ready=False)]),
        ])


@pytest.fixture(scope="module")
def ds():
    return build_records(dualstack(), serial=1)


def test_dual_stack_service_has_a_and_aaaa(ds):
    assert rdatas(ds.lookup("web.default.svc.cluster.local", A)) == ["10.96.0.20"]
    assert rdatas(ds.lookup("web.default.svc.cluster.local", AAAA)) == ["fd00:10:96::20"]
    # IPv6 primary, written in any spelling: answered in RFC 5952's
    assert rdatas(ds.lookup("six.default.svc.cluster.local", AAAA)) == ["fd00:10:96::21"]
    assert rdatas(ds.lookup("six.default.svc.cluster.local", A)) == ["10.96.0.21"]
    # the endpoint names of a ClusterIP service, per family
    assert rdatas(ds.lookup("fd00-10-244-1--5.web.default.svc.cluster.local", AAAA)) == ["fd00:10:244:1::5"]
    assert is_nodata(ds.lookup("fd00-10-244-1--5.web.default.svc.cluster.local", A))


def test_the_missing_family_is_nodata_not_nxdomain(ds, rs):
    assert is_nodata(ds.lookup("v4.default.svc.cluster.local", AAAA))
    assert is_nodata(rs.lookup("web6.v6.svc.cluster.local", A))   # and the reverse
    assert is_nxdomain(ds.lookup("v6.default.svc.cluster.local", AAAA))


def test_dual_stack_headless_endpoints(ds):
    base = "db.prod.svc.cluster.local"
    assert rdatas(ds.lookup(base, A)) == ["10.244.1.6"]
    assert rdatas(ds.lookup(base, AAAA)) == ["fd00:10:244:1::6", "fd00:10:244:2::"]
    assert rdatas(ds.lookup(f"db-0.{base}", A)) == ["10.244.1.6"]
    assert rdatas(ds.lookup(f"db-0.{base}", AAAA)) == ["fd00:10:244:1::6"]
    # CoreDNS's id of fd00:10:244:2:: ends in '-': a '0' is appended (a label may not end in '-')
    assert rdatas(ds.lookup(f"fd00-10-244-2--0.{base}", AAAA)) == ["fd00:10:244:2::"]
    assert is_nodata(ds.lookup(f"fd00-10-244-2--0.{base}", A))
    assert is_nxdomain(ds.lookup(f"db-2.{base}", AAAA))   # not ready


def test_srv_additional_section_has_both_families(ds):
    ans = ds.lookup("_http._tcp.web.default.svc.cluster.local", SRV)
    assert [rr[3] for rr in ans.answer] == [(0, 100, 80, f"web.default.svc.{Z}")]
    assert [(rr[1], rr[3]) for rr in ans.additional] == [(A, "10.96.0.20"), (AAAA, "fd00:10:96::20")]
    ans = ds.lookup("_pg._tcp.db.prod.svc.cluster.local", SRV)
    # one target per name: db-0 once for both of its addresses
    assert sorted(rr[3] for rr in ans.answer) == [(0, 50, 15432, f"db-0.db.prod.svc.{Z}"),
                                                  (0, 50, 15432, f"fd00-10-244-2--0.db.prod.svc.{Z}")]
    assert sorted(rdatas_add(ans)) == ["10.244.1.6", "fd00:10:244:1::6", "fd00:10:244:2::"]


def test_ip6_arpa_ptr_nibbles(ds):
    web = "0.2.0.0." + "0.0.0.0." * 3 + "0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa"
    assert rdatas(ds.lookup(web, PTR)) == [f"web.default.svc.{Z}"]
    assert rdatas(ds.lookup("20.0.96.10.in-addr.arpa", PTR)) == [f"web.default.svc.{Z}"]
    six = "1.2.0.0." + "0.0.0.0." * 3 + "0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa."
    assert rdatas(ds.lookup(six, PTR)) == [f"six.default.svc.{Z}"]
    db0 = "6.0.0.0." + "0.0.0.0." * 3 + "1.0.0.0.4.4.2.0.0.1.0.0.0.0.d.f.ip6.arpa"
    assert rdatas(ds.lookup(db0, PTR)) == [f"db-0.db.prod.svc.{Z}"]
    assert ds.lookup(db0, AAAA).outside     # other types fall through, as for in-addr.arpa
    # a name one nibble short is not ours
    assert ds.lookup(db0.split(".", 1)[1], PTR).outside


def test_nameserver_of_each_family(ds):
    ns = ds.lookup("cluster.local", NS)
    assert rdatas_add(ns) == ["10.96.0.10", "fd00:10:96::a"]
    assert rdatas(ds.lookup("ns.dns.cluster.local", AAAA)) == ["fd00:10:96::a"]


@pytest.mark.parametrize("name, rtype, want", [
    ("fd00-10-244-1--5", AAAA, "fd00:10:244:1::5"),
    ("FD00-10-244-1--5", AAAA, "fd00:10:244:1::5"),
    ("fd00-0-0-0-0-0-0-5", AAAA, "fd00::5"),
    ("1-2-3-4-5-6-7-8", AAAA, "1:2:3:4:5:6:7:8"),
    ("10-244-1-5", A, "10.244.1.5"),
    ("--", AAAA, "::"),     # Go's net.ParseIP("::") too: CoreDNS answers it
])
def test_pod_names_of_both_families(ds, name, rtype, want):
    ans = ds.lookup(f"{name}.default.pod.cluster.local", rtype)
    assert rdatas(ans) == [want]
    other = A if rtype == AAAA else AAAA
    assert is_nodata(ds.lookup(f"{name}.default.pod.cluster.local", other))


@pytest.mark.parametrize("label", [
    "fe80--1%eth0", "fd00--1%25", "fd00---1", "fd00-10-244-1--5-", "-fd00--1", "fd00-10-244-1--5--1",
    "1-2-3-4-5-6-7-8-9", "10-244-1", "010-244-1-5", "10-244-1-256", "g--1", "fd00--1\\.x", "---",
])
def test_garbage_pod_names_are_nxdomain(ds, label):
    assert is_nxdomain(ds.lookup(f"{label}.default.pod.cluster.local", AAAA))
    assert is_nxdomain(ds.lookup(f"{label}.default.pod.cluster.local", A))


def test_dual_stack_json_round_trip_and_the_old_keys(tmp_path):
    c = dualstack()
    path = tmp_path / "dns.json"
    c.dump(str(path))
    assert DnsConfig.load(str(path)) == c
    data = json.loads(path.read_text())
    assert data["services"][0]["cluster_ips"] == ["10.96.0.20", "fd00:10:96::20"]
    assert data["services"][0]["endpoints"][0]["ips"] == ["10.244.1.5", "fd00:10:244:1::5"]
    # the single keys of before are read, alone or beside the lists they head
    old = DnsConfig.from_dict({"services": [
        {"namespace": "a", "name": "b", "cluster_ip": "10.96.0.5",
         "endpoints": [{"ip": "10.244.0.5", "hostname": "x"}]},
        {"namespace": "a", "name": "c", "cluster_ip": "fd00::5", "cluster_ips": ["fd00::5", "10.96.0.6"]},
        {"namespace": "a", "name": "h", "cluster_ip": "None", "cluster_ips": ["None"],
         "endpoints": [{"ip": "10.244.0.7", "ips": ["10.244.0.7", "fd00::7"]}]}]})
    assert old.services[0].cluster_ips == ["10.96.0.5"] and old.services[0].endpoints[0].ips == ["10.244.0.5"]
    assert old.services[1].cluster_ip == "fd00::5" and old.services[1].cluster_ips == ["fd00::5", "10.96.0.6"]
    assert old.services[2].headless and old.services[2].endpoints[0].ip == "10.244.0.7"
    r = build_records(old)
    assert rdatas(r.lookup("h.a.svc.cluster.local", AAAA)) == ["fd00::7"]
    assert rdatas(r.lookup("c.a.svc.cluster.local", A)) == ["10.96.0.6"]


def test_the_model_keeps_single_address_accessors():
    s = Service("a", "b", cluster_ips=["fd00::1", "10.0.0.1"])
    assert s.cluster_ip == "fd00::1" and not s.headless
    assert Service("a", "b", cluster_ips=["None"]).headless and Service("a", "b").cluster_ip is None
    e = Endpoint(ips=["10.0.0.2", "fd00::2"])
    assert e.ip == "10.0.0.2" and Endpoint("10.0.0.3").ips == ["10.0.0.3"]
    with pytest.raises(ValueError, match="not the first"):
        Service("a", "b", "ClusterIP", "10.0.0.9", cluster_ips=["10.0.0.1"])


def _svc(**kw):
    return {"services": [{"namespace": "a", "name": "b", **kw}]}


@pytest.mark.parametrize("data, needle", [
    (_svc(cluster_ips=["10.0.0.1", "10.0.0.2"]),
     "services[0].cluster_ips[1]: a second IPv4 address ('10.0.0.1', '10.0.0.2'); at most one per family"),
    (_svc(cluster_ips=["fd00::1", "fd00::2"]), "services[0].cluster_ips[1]: a second IPv6 address"),
    (_svc(cluster_ips=["10.0.0.1", "fd00::1", "fd00::2"]), "cluster_ips[2]: a second IPv6 address"),
    (_svc(cluster_ips=["10.0.0.1", "fd00::1::2"]), "services[0].cluster_ips[1]: 'fd00::1::2' is not an IP address"),
    (_svc(cluster_ips=["fd00:10:96::g"]), "'fd00:10:96::g' is not an IP address"),
    (_svc(cluster_ips=["fe80::1%eth0"]), "cluster_ips[0]: 'fe80::1%eth0' has a zone index (%eth0)"),
    (_svc(cluster_ip="::ffff:10.96.0.1"),
     "services[0].cluster_ip: '::ffff:10.96.0.1' is an IPv4-mapped IPv6 address; write the IPv4 address 10.96.0.1"),
    (_svc(cluster_ips=[10]), "services[0].cluster_ips[0]: must be a string"),
    (_svc(cluster_ips="10.0.0.1"), "services[0].cluster_ips: wrong type str"),
    (_svc(cluster_ip="10.0.0.1", cluster_ips=["fd00::1", "10.0.0.1"]),
     "services[0].cluster_ip: '10.0.0.1' must be the first of cluster_ips ['fd00::1', '10.0.0.1']"),
    (_svc(type="NodePort", cluster_ips=[]), "services[0].cluster_ip: required for type NodePort"),
    (_svc(type="Headless", cluster_ips=["fd00::1"]), "services[0].cluster_ip: must be null for type Headless"),
    (_svc(type="Headless", endpoints=[{"ips": ["10.244.0.1", "10.244.0.2"]}]),
     "services[0].endpoints[0].ips[1]: a second IPv4 address"),
    (_svc(type="Headless", endpoints=[{"ips": []}]), "services[0].endpoints[0].ip: required"),
    (_svc(type="Headless", endpoints=[{"hostname": "x"}]), "services[0].endpoints[0].ip: required"),
    (_svc(type="Headless", endpoints=[{"ips": ["fd00::1%2"]}]), "endpoints[0].ips[0]: 'fd00::1%2' has a zone index"),
    (_svc(type="Headless", endpoints=[{"ip": "10.0.0.1", "ips": ["10.0.0.2"]}]),
     "endpoints[0].ip: '10.0.0.1' must be the first of ips ['10.0.0.2']"),
    ({"nameservers": ["fd00::a%lo"]}, "nameservers[0]: 'fd00::a%lo' has a zone index"),
    ({"nameservers": ["fd00::zz"]}, "nameservers[0]: 'fd00::zz' is not an IP address"),
])
def test_bad_addresses_are_named(data, needle):
    with pytest.raises(ConfigError) as e:
        DnsConfig.from_dict(data, "dns.json")
    assert needle in str(e.value), str(e.value)
