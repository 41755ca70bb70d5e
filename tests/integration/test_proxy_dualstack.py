"""The service data plane over both address families, on a hand-built routed dual-stack node: two
server pods and a client pod, each with an IPv4 and an IPv6 address, and an outside host reaching
the node over both families; each in its own namespace, all named `lkt-pxd-<random>-*`.

Pods are wired as in test_proxy_dataplane (pod /32 and /128, node route per pod); the IPv6 gateway
is the link-local fe80::1 on the node's end of each veth (an IPv6 neighbour is only answered for an
address of the interface asked, so a gateway on `lo` would not do). The node gets the `ip` and `ip6`
tables built from real manifests by `build_service_view` + `apply_node_services`.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterator

import pytest

from labkit.k8s import parse_manifests
from labkit.net import nft
from labkit.proxy import apply_node_services, build_service_view, remove_node_services

from .test_proxy_dataplane import Cluster as RoutedCluster
from .test_proxy_dataplane import sh

pytestmark = pytest.mark.integration

POD_CIDRS = ["10.244.0.0/16", "fd00:10:244::/56"]
SERVICE_CIDRS = "10.96.0.0/16,fd00:10:96::/112"
GATEWAY4, GATEWAY6_GLOBAL, GATEWAY6 = "10.244.0.1", "fd00:10:244::1", "fe80::1"
NODE_OUTSIDE = ("192.168.79.1", "fd00:79::1")
OUTSIDE = ("192.168.79.2", "fd00:79::2")
SERVERS = {"p1": ("10.244.0.11", "fd00:10:244::11"), "p2": ("10.244.0.12", "fd00:10:244::12")}
CLIENT = ("10.244.0.20", "fd00:10:244::20")

MANIFESTS = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  ipFamilyPolicy: PreferDualStack
  selector: {app: web}
  ports:
    - {name: http, port: 80, targetPort: 8080, nodePort: 30080}
    - {name: dns, port: 53, targetPort: 5353, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: sticky}
spec:
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv6, IPv4]
  selector: {app: web}
  sessionAffinity: ClientIP
  ports: [{port: 81, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: four}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30081}]
---
apiVersion: v1
kind: Service
metadata: {name: empty}
spec:
  type: NodePort
  ipFamilyPolicy: PreferDualStack
  selector: {app: nothing}
  ports: [{port: 80, nodePort: 30099}]
---
apiVersion: v1
kind: Service
metadata: {name: self}
spec:
  ipFamilies: [IPv6]
  selector: {statefulset.kubernetes.io/pod-name: p1}
  ports: [{port: 80, targetPort: 8080}]
"""
for _name in SERVERS:
    MANIFESTS += f"""---
apiVersion: v1
kind: Pod
metadata:
  name: {_name}
  labels: {{app: web, statefulset.kubernetes.io/pod-name: {_name}}}
spec:
  containers: [{{name: server, ports: [{{containerPort: 8080}}, {{containerPort: 5353, protocol: UDP}}]}}]
"""
MANIFESTS += """---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  containers: [{name: shell}]
"""

# Answers every TCP connection and UDP datagram, over either family, with "<pod name> <peer address>".
SERVER = r"""
import socket, sys, threading
name = sys.argv[1]
def dual(kind):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return s
def peer(address):
    return address.removeprefix("::ffff:")
tcp = dual(socket.SOCK_STREAM); tcp.bind(("::", 8080)); tcp.listen(128)
udp = dual(socket.SOCK_DGRAM); udp.bind(("::", 5353))
def serve_udp():
    while True:
        data, address = udp.recvfrom(512)
        udp.sendto(f"{name} {peer(address[0])}".encode(), address)
threading.Thread(target=serve_udp, daemon=True).start()
print("ready", flush=True)
while True:
    conn, address = tcp.accept()
    conn.sendall(f"{name} {peer(address[0])}\n".encode()); conn.close()
"""


class Cluster(RoutedCluster):
    """test_proxy_dataplane's cluster, each pod with an address of each family."""

    server_code = SERVER

    def add_ns(self, short: str) -> None:
        super().add_ns(short)
        # addresses usable at once (no tentative DAD), no router advertisements taken
        for key in ("accept_dad=0", "accept_ra=0"):
            for scope in ("all", "default"):
                sh("ip", "netns", "exec", self.ns(short), "sysctl", "-qw", f"net.ipv6.conf.{scope}.{key}")

    def add_pod(self, short: str, ips: tuple[str, str], veth: str) -> None:  # type: ignore[override]
        self.add_ns(short)
        node, pod = self.ns("node"), self.ns(short)
        sh("ip", "link", "add", veth, "netns", node, "type", "veth", "peer", "name", "eth0", "netns", pod)
        sh("ip", "-n", pod, "addr", "add", f"{ips[0]}/32", "dev", "eth0")
        sh("ip", "-n", pod, "addr", "add", f"{ips[1]}/128", "dev", "eth0", "nodad")
        sh("ip", "-n", pod, "link", "set", "eth0", "up")
        sh("ip", "-n", pod, "route", "add", GATEWAY4, "dev", "eth0", "scope", "link")
        sh("ip", "-n", pod, "route", "add", "default", "via", GATEWAY4, "dev", "eth0")
        sh("ip", "-n", pod, "-6", "route", "add", "default", "via", GATEWAY6, "dev", "eth0")
        sh("ip", "-n", node, "addr", "add", f"{GATEWAY6}/64", "dev", veth, "nodad")
        sh("ip", "-n", node, "link", "set", veth, "up")
        sh("ip", "-n", node, "route", "add", f"{ips[0]}/32", "dev", veth)
        sh("ip", "-n", node, "-6", "route", "add", f"{ips[1]}/128", "dev", veth)


def build(cluster: Cluster) -> None:
    cluster.add_ns("node")
    node = cluster.ns("node")
    sh("ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    sh("ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
    sh("ip", "-n", node, "addr", "add", f"{GATEWAY4}/32", "dev", "lo")
    sh("ip", "-n", node, "addr", "add", f"{GATEWAY6_GLOBAL}/128", "dev", "lo")
    for index, (name, ips) in enumerate(SERVERS.items(), start=1):
        cluster.add_pod(name, ips, f"veth{index}")
    cluster.add_pod("client", CLIENT, "vethc")
    cluster.add_ns("outside")
    outside = cluster.ns("outside")
    sh("ip", "link", "add", "ext0", "netns", node, "type", "veth", "peer", "name", "eth0", "netns", outside)
    for ns, dev, (v4, v6) in ((node, "ext0", NODE_OUTSIDE), (outside, "eth0", OUTSIDE)):
        sh("ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
        sh("ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")
        sh("ip", "-n", ns, "link", "set", dev, "up")
    # The node's own default routes (its "uplink"), so node processes can route to ClusterIPs.
    sh("ip", "-n", node, "route", "add", "default", "via", OUTSIDE[0])
    sh("ip", "-n", node, "-6", "route", "add", "default", "via", OUTSIDE[1])
    for name in SERVERS:
        cluster.start_server(name)


def views(servers: dict[str, tuple[str, str]] = SERVERS):
    pod_ips = {f"default/{name}": ips for name, ips in servers.items()} | {"default/client": CLIENT}
    return build_service_view(parse_manifests(MANIFESTS, "dualstack.yaml"), pod_ips, service_cidr=SERVICE_CIDRS)


def apply(cluster: Cluster, found=None, previous=None) -> str:
    return apply_node_services(cluster.path("node"), found or views(), pod_cidr=POD_CIDRS,
                               node_ips=list(NODE_OUTSIDE), previous=previous)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster(f"lkt-pxd-{secrets.token_hex(3)}")
    try:
        build(c)
        apply(c)
        yield c
    finally:
        c.teardown()
    assert c.leftovers() == []


@pytest.fixture(scope="module")
def ips() -> dict[str, dict[int, str]]:
    """Service name -> {4: its IPv4 ClusterIP, 6: its IPv6 one} (the families it has)."""
    return {v.name: {f: v.cluster_ip_of(f) for f in (4, 6) if v.cluster_ip_of(f)} for v in views()}


def names(results: list[dict]) -> Counter:
    assert all(r["ok"] for r in results), results
    return Counter(r["reply"].split()[0] for r in results)


def peers(results: list[dict]) -> set[str]:
    return {r["reply"].split()[1] for r in results}


def test_families_as_the_api_server_defaults_them(ips):
    assert set(ips["web"]) == {4, 6} and set(ips["four"]) == {4} and set(ips["self"]) == {6}
    sticky = next(v for v in views() if v.name == "sticky")
    assert sticky.ip_families == ("IPv6", "IPv4") and sticky.cluster_ip == ips["sticky"][6]


@pytest.mark.parametrize("family", [4, 6])
def test_a_pod_reaches_both_cluster_ips_without_nat(cluster, ips, family):
    results = cluster.run("client", "tcp", ips["web"][family], 80, count=30)
    assert set(names(results)) == set(SERVERS)  # spread over both endpoints, in each family
    assert peers(results) == {CLIENT[0 if family == 4 else 1]}  # the client's own address of that family


@pytest.mark.parametrize("family", [4, 6])
def test_node_ports_on_the_node_address_of_each_family(cluster, family):
    index = 0 if family == 4 else 1
    results = cluster.run("outside", "tcp", NODE_OUTSIDE[index], 30080, count=12)
    assert set(names(results)) <= set(SERVERS) and len(names(results)) >= 1
    assert OUTSIDE[index] not in peers(results)  # masqueraded: the pod answers the node
    assert all((":" in p) == (family == 6) for p in peers(results))


def test_a_single_stack_node_port_is_served_on_its_family_only(cluster):
    assert names(cluster.run("outside", "tcp", NODE_OUTSIDE[0], 30081, count=2))
    (v6,) = cluster.run("outside", "tcp", NODE_OUTSIDE[1], 30081)
    assert not v6["ok"]  # no IPv6 ClusterIP, so no IPv6 NodePort (kube-proxy's proxier per family)


def test_affinity_holds_per_family(cluster, ips):
    pinned = {}
    for family in (6, 4):
        hits = names(cluster.run("client", "tcp", ips["sticky"][family], 81, count=15))
        assert len(hits) == 1, (family, hits)
        pinned[family] = next(iter(hits))
        assert names(cluster.run("client", "tcp", ips["sticky"][family], 81, count=5)).keys() == hits.keys()
    # Without affinity the same client spreads in both families (the pinning is the service's, not chance).
    for family in (4, 6):
        assert len(names(cluster.run("client", "tcp", ips["web"][family], 80, count=20))) == 2
    # Each family keeps its own affinity sets.
    listing = nft.list_ruleset(cluster.path("node"), "labkit-proxy", family="ip6")
    assert "type ipv6_addr" in listing and "fd00:10:244::20" in listing  # the pinned client
    assert "fd00:10:244::20" not in nft.list_ruleset(cluster.path("node"), "labkit-proxy", family="ip")


@pytest.mark.parametrize("family", [4, 6])
def test_no_endpoints_is_refused_at_once_in_each_family(cluster, ips, family):
    (result,) = cluster.run("client", "tcp", ips["empty"][family], 80)
    assert result["error"] == "ConnectionRefusedError", result
    (outside,) = cluster.run("outside", "tcp", NODE_OUTSIDE[0 if family == 4 else 1], 30099)
    assert outside["error"] == "ConnectionRefusedError", outside


def test_hairpin_over_ipv6(cluster, ips):
    results = cluster.run("p1", "tcp", ips["self"][6], 80, count=3)
    assert names(results) == Counter({"p1": 3})
    assert SERVERS["p1"][1] not in peers(results)  # masqueraded to the node, so the reply comes back


def test_node_processes_reach_ipv6_cluster_ips(cluster, ips):
    assert set(names(cluster.run("node", "tcp", ips["web"][6], 80, count=4))) <= set(SERVERS)


def test_udp_over_ipv6_and_stale_flows_cleared(cluster, ips):
    ip = ips["web"][6]
    (first,) = cluster.run("client", "udp", ip, 53, source_port=40153)
    pinned = first["reply"].split()[0]
    assert first["reply"].split()[1] == CLIENT[1]
    assert names(cluster.run("client", "udp", ip, 53, count=4, source_port=40153)) == Counter({pinned: 4})
    remaining = {n: a for n, a in SERVERS.items() if n != pinned}
    try:
        apply(cluster, views(remaining), previous=views())
        hits = names(cluster.run("client", "udp", ip, 53, count=4, source_port=40153))
        assert pinned not in hits and len(hits) == 1, hits
    finally:
        apply(cluster, views(), previous=views(remaining))


def test_both_tables_replace_and_remove_atomically(cluster):
    text = apply(cluster)
    assert text.count("delete table ip labkit-proxy\n") == 1 and text.count("delete table ip6 labkit-proxy\n") == 1
    listing = nft.list_ruleset(cluster.path("node"))
    assert listing.count("table ip labkit-proxy") == 1 and listing.count("table ip6 labkit-proxy") == 1
    path = cluster.path("client")
    apply_node_services(path, views(), pod_cidr=POD_CIDRS)
    remove_node_services(path)
    remove_node_services(path)  # idempotent
    assert "labkit-proxy" not in nft.list_ruleset(path)
