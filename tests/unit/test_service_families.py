"""Dual-stack Services: spec.ipFamilyPolicy, ipFamilies and clusterIPs validated and defaulted as the
API server does (labkit.k8s.models, labkit.k8s.allocate), allocated per family, and the views the
data plane and DNS read (labkit.proxy.views)."""

from __future__ import annotations

import ipaddress

import pytest

from labkit.errors import InputError
from labkit.k8s import parse_manifests
from labkit.k8s.allocate import ServiceIPs, allocate_cluster_ips, allocate_service_ips, service_families
from labkit.proxy import build_service_view
from labkit.proxy.conntrack import stale_udp_endpoints

V4, V6 = "10.96.0.0/16", "fd00:10:96::/112"
CLUSTERS = {  # the cluster's service CIDRs, preferred family first
    "v4": {"IPv4": V4},
    "v6": {"IPv6": V6},
    "v4v6": {"IPv4": V4, "IPv6": V6},
    "v6v4": {"IPv6": V6, "IPv4": V4},
}


def service(name: str, spec: str, namespace: str = "default") -> str:
    return f"apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n{spec}---\n"


def pod(name: str, labels: str = "{app: web}") -> str:
    return (f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {labels}\n"
            "spec:\n  containers:\n    - name: c\n      ports: [{name: http, containerPort: 8080}]\n---\n")


def spec_of(text: str):
    (svc,) = parse_manifests(service("s", text), "m.yaml").services
    return svc.spec


PORTS = "  ports: [{port: 80}]\n"
SELECTOR = "  selector: {app: web}\n"

# (spec lines, {cluster: (policy, families) or the problem's field}) -- the API server's table
# (pkg/registry/core/service/storage/alloc.go, initIPFamilyFields), one row per kind of request.
TABLE = [
    ("", {"v4": ("SingleStack", ("IPv4",)), "v6": ("SingleStack", ("IPv6",)),
          "v4v6": ("SingleStack", ("IPv4",)), "v6v4": ("SingleStack", ("IPv6",))}),
    ("  ipFamilyPolicy: SingleStack\n", {"v4": ("SingleStack", ("IPv4",)), "v6v4": ("SingleStack", ("IPv6",))}),
    ("  ipFamilyPolicy: PreferDualStack\n", {
        "v4": ("PreferDualStack", ("IPv4",)), "v6": ("PreferDualStack", ("IPv6",)),
        "v4v6": ("PreferDualStack", ("IPv4", "IPv6")), "v6v4": ("PreferDualStack", ("IPv6", "IPv4"))}),
    ("  ipFamilyPolicy: RequireDualStack\n", {
        "v4": "spec.ipFamilyPolicy", "v6": "spec.ipFamilyPolicy",
        "v4v6": ("RequireDualStack", ("IPv4", "IPv6")), "v6v4": ("RequireDualStack", ("IPv6", "IPv4"))}),
    # ipFamilies order decides the primary, whatever the cluster prefers
    ("  ipFamilyPolicy: PreferDualStack\n  ipFamilies: [IPv6]\n", {
        "v4": "spec.ipFamilies[0]", "v6": ("PreferDualStack", ("IPv6",)),
        "v4v6": ("PreferDualStack", ("IPv6", "IPv4"))}),
    ("  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv6, IPv4]\n", {
        "v4": "spec.ipFamilyPolicy spec.ipFamilies[0]", "v4v6": ("RequireDualStack", ("IPv6", "IPv4"))}),
    ("  ipFamilies: [IPv6]\n", {"v4v6": ("SingleStack", ("IPv6",)), "v4": "spec.ipFamilies[0]"}),
    ("  ipFamilies: [IPv4, IPv6]\n", {"v4v6": "spec.ipFamilies"}),  # two families need a dual-stack policy
    # a given clusterIP decides its family
    ("  clusterIP: fd00:10:96::5\n", {"v4v6": ("SingleStack", ("IPv6",)), "v4": "spec.clusterIP"}),
    ("  clusterIP: 10.96.0.5\n  clusterIPs: [10.96.0.5, fd00:10:96::5]\n", {"v4v6": "spec.clusterIPs"}),
    ("  clusterIP: 10.96.0.5\n  clusterIPs: [10.96.0.5, fd00:10:96::5]\n  ipFamilyPolicy: PreferDualStack\n",
     {"v4v6": ("PreferDualStack", ("IPv4", "IPv6")), "v4": "spec.clusterIPs[1]"}),
    # headless: with a selector like any Service; without one RequireDualStack, both even on one family
    ("  clusterIP: None\n" + SELECTOR, {"v4v6": ("SingleStack", ("IPv4",)), "v6": ("SingleStack", ("IPv6",))}),
    ("  clusterIP: None\n  ipFamilyPolicy: PreferDualStack\n" + SELECTOR, {
        "v4v6": ("PreferDualStack", ("IPv4", "IPv6")), "v4": ("PreferDualStack", ("IPv4",))}),
    ("  clusterIP: None\n  ipFamilyPolicy: RequireDualStack\n" + SELECTOR, {"v4": "spec.ipFamilyPolicy"}),
    ("  clusterIP: None\n", {"v4": ("RequireDualStack", ("IPv4", "IPv6")),
                             "v6v4": ("RequireDualStack", ("IPv6", "IPv4"))}),
    ("  clusterIP: None\n  ipFamilyPolicy: SingleStack\n", {"v4v6": ("SingleStack", ("IPv4",))}),
]
CASES = [(spec, cluster, want) for spec, row in TABLE for cluster, want in row.items()]


@pytest.mark.parametrize(("spec", "cluster", "want"), CASES,
                         ids=[f"{c}:{s.strip().replace(chr(10), ';')}" for s, c, _ in CASES])
def test_families_are_defaulted_as_the_api_server_does(spec, cluster, want):
    policy, families, problems = service_families(spec_of(spec + PORTS), CLUSTERS[cluster])
    if isinstance(want, str):
        fields = [".".join(map(str, where)).replace(".0", "[0]").replace(".1", "[1]") for where, _ in problems]
        assert fields == want.split()
    else:
        assert problems == []
        assert (policy, families) == want


def test_require_dual_stack_on_a_single_stack_cluster_is_refused_with_the_line():
    text = service("web", "  ipFamilyPolicy: RequireDualStack\n" + SELECTOR + PORTS)
    with pytest.raises(InputError) as exc:
        allocate_service_ips(parse_manifests(text, "m.yaml"), service_cidr=V4)
    assert str(exc.value) == (
        "m.yaml:7: spec.ipFamilyPolicy: RequireDualStack: this cluster is not configured for dual-stack services "
        "(service-cidr 10.96.0.0/16); valid: SingleStack or PreferDualStack, or a dual-stack cluster "
        "(cluster.service-cidr with an IPv4 and an IPv6 CIDR, e.g. 10.96.0.0/16,fd00:10:96::/112)")


@pytest.mark.parametrize(("spec", "message"), [
    ("  clusterIP: 10.96.0.5\n  clusterIPs: [10.96.0.6]\n",
     "m.yaml:8: spec.clusterIPs[0]: first value must match clusterIP '10.96.0.5'; valid: [10.96.0.5, ...] "
     "or leave clusterIPs out"),
    ("  clusterIPs: [10.96.0.6]\n",
     "m.yaml:7: spec.clusterIPs: must be empty when clusterIP is not specified; valid: set clusterIP to "
     "clusterIPs[0] too, or leave both out to have them allocated"),
    ("  ipFamilies: [IPv4, IPv4]\n",
     "m.yaml:7: spec.ipFamilies[1]: IPv4 is listed twice; valid: IPv4, IPv6 or both once, primary first"),
    ("  clusterIP: 10.96.0.5\n  clusterIPs: [10.96.0.5, 10.96.0.6]\n  ipFamilyPolicy: PreferDualStack\n",
     "m.yaml:8: spec.clusterIPs[1]: may specify no more than one IP for each IP family"),
    ("  clusterIP: 10.96.0.5\n  ipFamilies: [IPv6]\n",
     "m.yaml:7: spec.clusterIP: 10.96.0.5 is not valid: expected an IPv6 value as indicated by ipFamilies[0]"),
    ("  ipFamilyPolicy: SingleStack\n  ipFamilies: [IPv4, IPv6]\n",
     "m.yaml:7: spec.ipFamilyPolicy: SingleStack is not valid when multiple IP families are specified; valid: "
     "RequireDualStack or PreferDualStack"),
    ("  clusterIP: None\n  clusterIPs: [None, 10.96.0.5]\n",
     "m.yaml:8: spec.clusterIPs[0]: 'None' must be the first and only value"),
    ("  clusterIP: fd00::zz\n", None),
], ids=["first-must-match", "ips-without-ip", "family-twice", "two-v4", "family-mismatch", "single-two",
        "none-and-ip", "bad-ip"])
def test_bad_family_fields_are_refused_with_file_line_and_field(spec, message):
    with pytest.raises(InputError) as exc:
        parse_manifests(service("web", spec + PORTS), "m.yaml")
    if message is None:
        assert "valid: an IPv4 or IPv6 address, 'None' (headless) or ''" in str(exc.value)
    else:
        assert str(exc.value) == message


def test_external_name_takes_no_families():
    with pytest.raises(InputError, match=r"m.yaml:9: spec.ipFamilies: may not be set for ExternalName services"):
        parse_manifests(service("ext", "  type: ExternalName\n  externalName: example.com\n"
                                       "  ipFamilies: [IPv4]\n"), "m.yaml")
    (svc,) = build_service_view(parse_manifests(service("ext", "  type: ExternalName\n  externalName: example.com\n")),
                                {}, service_cidr=[V4, V6])
    assert (svc.cluster_ips, svc.ip_families, svc.ip_family_policy) == ((), (), None)


# ---------------------------------------------------------------- allocation per family


def dual_text(count: int = 20) -> str:
    text = service("kubernetes", "  ipFamilyPolicy: PreferDualStack\n  ports: [{port: 443}]\n")
    text += service("kube-dns", "  ipFamilyPolicy: RequireDualStack\n  ports: [{port: 53, protocol: UDP}]\n",
                    "kube-system")
    for i in range(count):
        text += service(f"s{i}", ("  ipFamilyPolicy: PreferDualStack\n" if i % 2 else "") + PORTS)
    return text


def test_each_family_gets_an_address_from_its_cidr_reproducibly():
    cidrs, dns = [V4, V6], ["10.96.0.10", "fd00:10:96::a"]
    found = allocate_service_ips(parse_manifests(dual_text()), service_cidr=cidrs, dns_ip=dns)
    assert found[("default", "kubernetes")].cluster_ips == ("10.96.0.1", "fd00:10:96::1")
    assert found[("kube-system", "kube-dns")].cluster_ips == ("10.96.0.10", "fd00:10:96::a")
    addresses = [ip for f in found.values() for ip in f.cluster_ips]
    assert len(addresses) == len(set(addresses)) == 2 + 2 + 20 + 10
    for f in found.values():
        assert [ipaddress.ip_address(ip).version for ip in f.cluster_ips] == [int(x[-1]) for x in f.families]
        assert all(ipaddress.ip_address(ip) in ipaddress.ip_network(V4 if "." in ip else V6) for ip in f.cluster_ips)
    assert allocate_service_ips(parse_manifests(dual_text()), service_cidr=cidrs, dns_ip=dns) == found
    # The IPv4 addresses are those of the IPv4-only cluster: adding IPv6 moves nothing.
    only_v4 = allocate_cluster_ips(parse_manifests(dual_text().replace("RequireDualStack", "PreferDualStack")),
                                   service_cidr=V4, dns_ip="10.96.0.10")
    assert only_v4 == {k: f.cluster_ips[0] for k, f in found.items()}
    # The preferred family first: the same v4,v6 pair in the other order gives IPv6 primaries.
    swapped = allocate_service_ips(parse_manifests(dual_text()), service_cidr=[V6, V4], dns_ip=dns)
    assert swapped[("default", "s0")].families == ("IPv6",)
    assert swapped[("default", "s1")].cluster_ips == found[("default", "s1")].cluster_ips[::-1]


def test_given_cluster_ips_are_claimed_per_family_and_checked():
    text = service("web", "  clusterIP: fd00:10:96::77\n  clusterIPs: [fd00:10:96::77, 10.96.7.7]\n"
                          "  ipFamilyPolicy: RequireDualStack\n" + PORTS)
    (found,) = allocate_service_ips(parse_manifests(text), service_cidr=[V4, V6]).values()
    assert (found.families, found.cluster_ips) == (("IPv6", "IPv4"), ("fd00:10:96::77", "10.96.7.7"))
    bad = service("web", "  clusterIP: fd00:10:97::1\n" + PORTS)
    bad += service("dns", "  clusterIP: fd00:10:96::a\n" + PORTS)
    with pytest.raises(InputError) as exc:
        allocate_service_ips(parse_manifests(bad, "m.yaml"), service_cidr=[V4, V6],
                             dns_ip=["10.96.0.10", "fd00:10:96::a"])
    assert str(exc.value).splitlines() == [
        "m.yaml:7: spec.clusterIP: fd00:10:97::1 is outside service-cidr fd00:10:96::/112; valid: an unused "
        "address in service-cidr fd00:10:96::/112 other than fd00:10:96::1 and fd00:10:96::a",
        "m.yaml:16: spec.clusterIP: fd00:10:96::a is reserved for cluster DNS; valid: an unused "
        "address in service-cidr fd00:10:96::/112 other than fd00:10:96::1 and fd00:10:96::a",
    ]


# ---------------------------------------------------------------- views: endpoints per family


POD_IPS = {"default/a": ("10.244.0.5", "fd00:10:244::5"), "default/b": ("10.244.1.6", "fd00:10:244:1::6"),
           "default/c": "10.244.2.7"}  # c has one address (an IPv4-only pod): no IPv6 endpoint


def dual_views():
    text = pod("a") + pod("b") + pod("c")
    text += service("single", SELECTOR + "  ports: [{port: 80, targetPort: http}]\n")
    text += service("dual", "  type: NodePort\n  ipFamilyPolicy: PreferDualStack\n" + SELECTOR +
                    "  ports: [{port: 80, targetPort: http}]\n")
    text += service("six", "  ipFamilies: [IPv6]\n" + SELECTOR + "  ports: [{port: 80, targetPort: 8080}]\n")
    text += service("db", "  clusterIP: None\n  ipFamilyPolicy: PreferDualStack\n" + SELECTOR + PORTS)
    return {v.name: v for v in build_service_view(parse_manifests(text), POD_IPS, service_cidr=f"{V4},{V6}",
                                                  pod_nodes={"default/a": "n1", "default/b": "n2"})}


def test_endpoints_are_kept_per_family_primary_first():
    views = dual_views()
    single, dual, six = views["single"], views["dual"], views["six"]
    assert [e.ip for e in single.ports[0].endpoints] == ["10.244.0.5", "10.244.1.6", "10.244.2.7"]
    assert [e.ip for e in dual.ports[0].endpoints] == [
        "10.244.0.5", "10.244.1.6", "10.244.2.7", "fd00:10:244::5", "fd00:10:244:1::6"]
    assert [e.ip for e in six.ports[0].endpoints] == ["fd00:10:244::5", "fd00:10:244:1::6"]
    assert dual.ip_families == ("IPv4", "IPv6") and six.ip_families == ("IPv6",)
    assert dual.cluster_ip == dual.cluster_ips[0] and ":" in dual.cluster_ips[1]
    assert dual.cluster_ip_of(6) == dual.cluster_ips[1] and single.cluster_ip_of(6) is None
    assert six.cluster_ip == six.cluster_ips[0] and six.cluster_ip_of(4) is None
    db = views["db"]
    assert db.cluster_ip is None and db.cluster_ips == () and db.ip_families == ("IPv4", "IPv6")
    assert [(a.ip, a.ips) for a in db.addresses] == [
        ("10.244.0.5", ("10.244.0.5", "fd00:10:244::5")), ("10.244.1.6", ("10.244.1.6", "fd00:10:244:1::6")),
        ("10.244.2.7", ("10.244.2.7",))]


def test_status_names_every_cluster_ip_family_and_policy():
    views = dual_views()
    dual = views["dual"].as_status()
    assert dual["cluster_ip"] == dual["cluster_ips"][0]
    assert dual["ip_families"] == ["IPv4", "IPv6"] and dual["ip_family_policy"] == "PreferDualStack"
    assert dual["ports"][0]["endpoints"][-1] == "[fd00:10:244:1::6]:8080"
    assert dual["ports"][0]["endpoints"][0] == "10.244.0.5:8080"
    db = views["db"].as_status()
    assert (db["cluster_ip"], db["cluster_ips"]) == ("None", ["None"])
    assert db["endpoints"][0]["ips"] == ["10.244.0.5", "fd00:10:244::5"]
    single = views["single"].as_status()
    assert (single["ip_families"], single["ip_family_policy"]) == (["IPv4"], "SingleStack")


def test_ipv4_only_views_are_unchanged_by_the_family_fields():
    text = pod("a") + service("web", SELECTOR + "  ports: [{port: 80, targetPort: http}]\n")
    by_str = build_service_view(parse_manifests(text), {"default/a": "10.244.0.5"}, service_cidr=V4)
    by_tuple = build_service_view(parse_manifests(text), {"default/a": ("10.244.0.5",)}, service_cidr=V4)
    assert by_str == by_tuple
    (web,) = by_str
    assert web.cluster_ips == (web.cluster_ip,) and web.ip_families == ("IPv4",)
    assert web.as_status()["ports"][0]["endpoints"] == ["10.244.0.5:8080"]


def test_stale_udp_endpoints_of_both_families():
    before = dual_views()["dual"].model_copy(update={"ports": tuple(
        p.model_copy(update={"protocol": "UDP"}) for p in dual_views()["dual"].ports)})
    after = before.model_copy(update={"ports": tuple(
        p.model_copy(update={"endpoints": p.endpoints[:1]}) for p in before.ports)})
    assert stale_udp_endpoints([before], [after]) == {
        ("10.244.1.6", 8080), ("10.244.2.7", 8080), ("fd00:10:244::5", 8080), ("fd00:10:244:1::6", 8080)}


def test_a_dual_stack_plan_allocates_both_families_and_kube_dns_gets_each_dns_address():
    from pathlib import Path

    from labkit.topology import load_plan

    plan = load_plan(Path(__file__).resolve().parents[1] / "topologies" / "good" / "services-dualstack.yaml")
    found = plan.allocation.service_ips
    assert found[("kube-system", "kube-dns")] == ServiceIPs("PreferDualStack", ("IPv4", "IPv6"),
                                                            ("10.96.0.10", "fd00:10:96::a"))
    assert found[("default", "web")].families == ("IPv4", "IPv6")
    assert found[("default", "sticky")].families == ("IPv6", "IPv4")
    assert found[("default", "four")].families == ("IPv4",)
    assert found[("default", "db")] == ServiceIPs("PreferDualStack", ("IPv4", "IPv6"), ("None",))
    assert plan.allocation.cluster_ips[("default", "sticky")] == found[("default", "sticky")].cluster_ips[0]
    assert ("default", "db") not in plan.allocation.cluster_ips
