"""ClusterIP / NodePort allocation (labkit.k8s.allocate, the plan's) and endpoint resolution (labkit.proxy)."""

from __future__ import annotations

import ipaddress

import pytest

from labkit.errors import InputError
from labkit.k8s import parse_manifests
from labkit.k8s.allocate import allocate_cluster_ips, allocate_node_ports
from labkit.proxy import build_service_view

CIDR = "10.96.0.0/16"


def service(name: str, spec: str, namespace: str = "default") -> str:
    return (
        f"apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {namespace}\n"
        f"spec:\n{spec}---\n"
    )


def pod(name: str, labels: str, ports: str = "[]") -> str:
    return (
        f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {labels}\n"
        f"spec:\n  containers:\n    - name: c\n      ports: {ports}\n---\n"
    )


def test_cluster_ips_are_inside_the_cidr_unique_and_reproducible():
    text = "".join(service(f"s{i}", "  ports: [{port: 80}]\n") for i in range(50))
    w = parse_manifests(text)
    ips = allocate_cluster_ips(w, service_cidr=CIDR, dns_ip="10.96.0.10")
    assert len(set(ips.values())) == 50
    for ip in ips.values():
        assert ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(CIDR)
        assert ip not in ("10.96.0.0", "10.96.0.1", "10.96.0.10", "10.96.255.255")
    assert allocate_cluster_ips(parse_manifests(text), service_cidr=CIDR, dns_ip="10.96.0.10") == ips
    # Adding a service does not move the others.
    more = allocate_cluster_ips(
        parse_manifests(text + service("extra", "  ports: [{port: 80}]\n")), service_cidr=CIDR
    )
    assert {k: v for k, v in more.items() if k != ("default", "extra")} == ips


def test_small_cidr_is_filled_without_reserved_addresses():
    text = "".join(service(f"s{i}", "  ports: [{port: 80}]\n") for i in range(4))
    ips = allocate_cluster_ips(parse_manifests(text), service_cidr="10.96.0.0/29", dns_ip="10.96.0.2")
    assert sorted(ips.values()) == ["10.96.0.3", "10.96.0.4", "10.96.0.5", "10.96.0.6"]
    with pytest.raises(InputError, match="has no free address left"):
        allocate_cluster_ips(
            parse_manifests(text + service("s9", "  ports: [{port: 80}]\n")),
            service_cidr="10.96.0.0/29", dns_ip="10.96.0.2",
        )


def test_well_known_services_get_their_addresses():
    text = service("kubernetes", "  ports: [{port: 443}]\n") + service(
        "kube-dns", "  ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53}]\n", "kube-system"
    )
    ips = allocate_cluster_ips(parse_manifests(text), service_cidr=CIDR, dns_ip="10.96.0.10")
    assert ips == {("default", "kubernetes"): "10.96.0.1", ("kube-system", "kube-dns"): "10.96.0.10"}


def test_explicit_cluster_ip_is_kept_and_headless_gets_none():
    text = service("web", "  clusterIP: 10.96.7.7\n  ports: [{port: 80}]\n") + service(
        "db", "  clusterIP: None\n  ports: [{port: 5432}]\n"
    )
    ips = allocate_cluster_ips(parse_manifests(text), service_cidr=CIDR)
    assert ips == {("default", "web"): "10.96.7.7"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("  clusterIP: 10.97.0.5\n  ports: [{port: 80}]\n",
         "m.yaml:7: spec.clusterIP: 10.97.0.5 is outside service-cidr 10.96.0.0/16; valid: an unused "
         "address in service-cidr 10.96.0.0/16 other than 10.96.0.1 and 10.96.0.10"),
        ("  clusterIP: 10.96.0.10\n  ports: [{port: 80}]\n",
         "m.yaml:7: spec.clusterIP: 10.96.0.10 is reserved for cluster DNS; valid: an unused "
         "address in service-cidr 10.96.0.0/16 other than 10.96.0.1 and 10.96.0.10"),
        ("  clusterIP: 10.96.0.1\n  ports: [{port: 80}]\n",
         "m.yaml:7: spec.clusterIP: 10.96.0.1 is reserved for the kubernetes service; valid: an unused "
         "address in service-cidr 10.96.0.0/16 other than 10.96.0.1 and 10.96.0.10"),
    ],
    ids=["outside", "dns", "kubernetes"],
)
def test_bad_cluster_ip(spec, message):
    w = parse_manifests(service("web", spec), "m.yaml")
    with pytest.raises(InputError) as exc:
        allocate_cluster_ips(w, service_cidr=CIDR, dns_ip="10.96.0.10")
    assert str(exc.value) == message


def test_duplicate_cluster_ip():
    text = service("a", "  clusterIP: 10.96.3.3\n  ports: [{port: 80}]\n") + service(
        "b", "  clusterIP: 10.96.3.3\n  ports: [{port: 80}]\n"
    )
    with pytest.raises(InputError) as exc:
        allocate_cluster_ips(parse_manifests(text, "m.yaml"), service_cidr=CIDR)
    assert str(exc.value).startswith("m.yaml:16: spec.clusterIP: 10.96.3.3 is already allocated to service default/a")


def test_node_ports_given_allocated_and_conflicting():
    text = service("a", "  type: NodePort\n  ports: [{name: x, port: 80, nodePort: 30080}, {name: y, port: 81}]\n")
    text += service("b", "  type: NodePort\n  ports: [{port: 80}]\n")
    ports = allocate_node_ports(parse_manifests(text))
    assert ports[("default", "a", 0)] == 30080
    assert 30000 <= ports[("default", "a", 1)] <= 32767
    assert len(set(ports.values())) == 3
    assert allocate_node_ports(parse_manifests(text)) == ports
    clash = text + service("c", "  type: NodePort\n  ports: [{port: 80, nodePort: 30080}]\n")
    with pytest.raises(InputError) as exc:
        allocate_node_ports(parse_manifests(clash, "m.yaml"))
    assert str(exc.value) == (
        "m.yaml:26: spec.ports[0].nodePort: 30080 is already allocated to service default/a; "
        "valid: an unused port in 30000-32767"
    )


def test_endpoints_follow_selector_and_named_ports():
    text = (
        pod("a", "{app: web}", "[{name: http, containerPort: 8080}]")
        + pod("b", "{app: web}", "[{name: http, containerPort: 9090}]")
        + pod("c", "{app: web}")  # no port named http: not an endpoint of the named port
        + pod("d", "{app: other}", "[{name: http, containerPort: 8080}]")
        + pod("e", "{app: web}", "[{name: http, containerPort: 8080}]")  # no IP yet
        + service("web", "  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: http},"
                  " {name: raw, port: 81, targetPort: 7000}]\n")
        + service("manual", "  ports: [{port: 80}]\n")
    )
    ips = {"default/a": "10.244.1.5", "default/b": "10.244.0.9", "default/c": "10.244.2.2",
           "default/d": "10.244.0.3"}
    views = build_service_view(parse_manifests(text), ips, service_cidr=CIDR, pod_nodes={"default/a": "w1"})
    web, manual = views
    http, raw = web.ports
    assert [(e.ip, e.port, e.pod) for e in http.endpoints] == [
        ("10.244.0.9", 9090, "default/b"), ("10.244.1.5", 8080, "default/a"),
    ]
    assert [(e.ip, e.port) for e in raw.endpoints] == [
        ("10.244.0.9", 7000), ("10.244.1.5", 7000), ("10.244.2.2", 7000),
    ]
    assert [a.pod for a in web.addresses] == ["default/b", "default/a", "default/c"]
    assert http.endpoints[1].node == "w1"
    assert manual.ports[0].endpoints == ()
    status = web.as_status()
    assert status["cluster_ip"] == web.cluster_ip
    assert status["ports"][0]["endpoints"] == ["10.244.0.9:9090", "10.244.1.5:8080"]


def test_headless_and_external_name_views():
    text = (
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  serviceName: db\n"
        "  replicas: 2\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n"
        "    spec: {containers: [{name: db}]}\n---\n"
        + service("db", "  clusterIP: None\n  selector: {app: db}\n  ports: [{port: 5432}]\n")
        + service("ext", "  type: ExternalName\n  externalName: db.example.com\n")
    )
    ips = {"default/db-0": "10.244.0.2", "default/db-1": "10.244.0.3"}
    db, ext = build_service_view(parse_manifests(text), ips, service_cidr=CIDR)
    assert db.headless and db.cluster_ip is None
    assert [(a.ip, a.hostname) for a in db.addresses] == [("10.244.0.2", "db-0"), ("10.244.0.3", "db-1")]
    assert db.as_status()["cluster_ip"] == "None"
    assert ext.cluster_ip is None and ext.external_name == "db.example.com" and ext.addresses == ()


def test_stale_udp_endpoints_are_the_removed_udp_ones():
    from labkit.proxy import stale_udp_endpoints

    text = (
        pod("a", "{app: dns}", "[{name: dns, containerPort: 53, protocol: UDP}]")
        + pod("b", "{app: dns}", "[{name: dns, containerPort: 53, protocol: UDP}]")
        + service("dns", "  selector: {app: dns}\n  ports: [{name: dns, port: 53, targetPort: dns, protocol: UDP},"
                  " {name: tcp, port: 53}]\n")
    )
    w = parse_manifests(text)
    before = build_service_view(w, {"default/a": "10.244.0.2", "default/b": "10.244.0.3"}, service_cidr=CIDR)
    after = build_service_view(w, {"default/b": "10.244.0.3"}, service_cidr=CIDR)
    assert stale_udp_endpoints(before, after) == {("10.244.0.2", 53)}
    assert stale_udp_endpoints(after, before) == set()
