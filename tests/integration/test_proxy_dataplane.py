"""The service data plane on a hand-built routed cluster: a node with three server pods and a
client pod, a second node with one pod (routed host-gw style), and an outside host; each in its
own namespace, all named `lkt-px-<random>-*`.

Pods are wired as DESIGN.md section 7 describes (pod `/32`, link route to the node's gateway
address, node `/32` route per pod). The node gets the rule set built from real manifests by
`build_service_view` + `apply_node_services`, and traffic is checked from the pods' side.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator

import pytest

from labkit.errors import LabkitError
from labkit.k8s import parse_manifests
from labkit.net import nft
from labkit.proxy import apply_node_services, build_service_view, remove_node_services

pytestmark = pytest.mark.integration

POD_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
GATEWAY = "10.244.0.1"
NODE_OUTSIDE_IP = "192.168.77.1"
OUTSIDE_IP = "192.168.77.2"
SERVERS = {"p1": "10.244.0.11", "p2": "10.244.0.12", "p3": "10.244.0.13"}
CLIENT_IP = "10.244.0.20"
# A second node with its own podCIDR and one pod, routed host-gw style over a node-to-node link.
REMOTE_IP = "10.244.1.14"
NODE2_GATEWAY = "10.244.1.1"
NODE_LINK = ("192.168.78.1", "192.168.78.2")

MANIFESTS = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports:
    - {name: http, port: 80, targetPort: http, nodePort: 30080}
    - {name: dns, port: 53, targetPort: 5353, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: sticky}
spec:
  selector: {app: web}
  sessionAffinity: ClientIP
  ports: [{port: 81, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: empty}
spec:
  type: NodePort
  selector: {app: nothing}
  ports: [{name: http, port: 80, nodePort: 30099}, {name: dns, port: 53, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: remote}
spec:
  type: NodePort
  selector: {app: remote}
  ports: [{port: 80, targetPort: 8080, nodePort: 30081}]
---
apiVersion: v1
kind: Service
metadata: {name: self}
spec:
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
  containers:
    - name: server
      ports: [{{name: http, containerPort: 8080}}, {{name: dns, containerPort: 5353, protocol: UDP}}]
"""
MANIFESTS += """---
apiVersion: v1
kind: Pod
metadata: {name: p4, labels: {app: remote}}
spec:
  containers: [{name: server, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  containers: [{name: shell}]
"""

# Answers every TCP connection and UDP datagram with "<pod name> <peer address>".
SERVER = r"""
import socket, sys, threading
name = sys.argv[1]
tcp = socket.socket(); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("0.0.0.0", 8080)); tcp.listen(128)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("0.0.0.0", 5353))
def serve_udp():
    while True:
        data, peer = udp.recvfrom(512)
        udp.sendto(f"{name} {peer[0]}".encode(), peer)
threading.Thread(target=serve_udp, daemon=True).start()
print("ready", flush=True)
while True:
    conn, peer = tcp.accept()
    conn.sendall(f"{name} {peer[0]}\n".encode()); conn.close()
"""

# Makes `count` fresh connections (or datagrams from fresh sockets), over the family of `host`, and
# reports each as JSON.
CLIENT = r"""
import json, socket, sys
proto, host, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
source_port = int(sys.argv[5]) if len(sys.argv) > 5 else 0
family = socket.AF_INET6 if ":" in host else socket.AF_INET  # test_proxy_dualstack's clients use it too
out = []
for _ in range(count):
    try:
        if proto == "tcp":
            s = socket.create_connection((host, port), timeout=3)
            reply = s.makefile().readline().strip()
        else:
            s = socket.socket(family, socket.SOCK_DGRAM); s.settimeout(3)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", source_port))
            s.connect((host, port)); s.send(b"hi"); reply = s.recv(512).decode()
        s.close()
        out.append({"ok": True, "reply": reply})
    except OSError as exc:
        out.append({"ok": False, "error": type(exc).__name__})
print(json.dumps(out))
"""


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)


class Cluster:
    """Namespaces named `<prefix>-<short>`, pods wired to a node, servers and clients run in them
    (test_proxy_dualstack's cluster is this one with a second family)."""

    server_code, client_code = SERVER, CLIENT

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen] = []

    def ns(self, short: str) -> str:
        return f"{self.prefix}-{short}"

    def path(self, short: str) -> str:
        return f"/run/netns/{self.ns(short)}"

    def add_ns(self, short: str) -> None:
        sh("ip", "netns", "add", self.ns(short))
        self.namespaces.append(self.ns(short))
        sh("ip", "-n", self.ns(short), "link", "set", "lo", "up")

    def add_pod(self, short: str, ip: str, veth: str, node: str = "node", gateway: str = GATEWAY) -> None:
        self.add_ns(short)
        node, pod = self.ns(node), self.ns(short)
        sh("ip", "link", "add", veth, "netns", node, "type", "veth", "peer", "name", "eth0", "netns", pod)
        sh("ip", "-n", pod, "addr", "add", f"{ip}/32", "dev", "eth0")
        sh("ip", "-n", pod, "link", "set", "eth0", "up")
        sh("ip", "-n", pod, "route", "add", gateway, "dev", "eth0", "scope", "link")
        sh("ip", "-n", pod, "route", "add", "default", "via", gateway, "dev", "eth0")
        sh("ip", "-n", node, "link", "set", veth, "up")
        sh("ip", "-n", node, "route", "add", f"{ip}/32", "dev", veth)

    def start_server(self, short: str) -> None:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(short), sys.executable, "-c", self.server_code, short],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.processes.append(proc)
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()

    def run(self, short: str, proto: str, host: str, port: int, count: int = 1, source_port: int = 0) -> list[dict]:
        result = subprocess.run(
            ["ip", "netns", "exec", self.ns(short), sys.executable, "-c", self.client_code, proto, host, str(port),
             str(count), str(source_port)],
            capture_output=True, text=True, timeout=60, check=True,
        )
        return json.loads(result.stdout)

    def teardown(self) -> None:
        for proc in self.processes:
            proc.kill()
            proc.wait(timeout=10)
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)

    def leftovers(self) -> list[str]:
        listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        return [line.split()[0] for line in listing.splitlines() if line.startswith(self.prefix)]


def build(cluster: Cluster) -> None:
    cluster.add_ns("node")
    node = cluster.ns("node")
    sh("ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    sh("ip", "-n", node, "addr", "add", f"{GATEWAY}/32", "dev", "lo")
    for index, (name, ip) in enumerate(SERVERS.items(), start=1):
        cluster.add_pod(name, ip, f"veth{index}")
    cluster.add_pod("client", CLIENT_IP, "vethc")
    cluster.add_ns("outside")
    outside = cluster.ns("outside")
    sh("ip", "link", "add", "ext0", "netns", node, "type", "veth", "peer", "name", "eth0", "netns", outside)
    sh("ip", "-n", node, "addr", "add", f"{NODE_OUTSIDE_IP}/24", "dev", "ext0")
    sh("ip", "-n", node, "link", "set", "ext0", "up")
    sh("ip", "-n", outside, "addr", "add", f"{OUTSIDE_IP}/24", "dev", "eth0")
    sh("ip", "-n", outside, "link", "set", "eth0", "up")
    # The node's own default route (its "uplink"), so node processes can route to ClusterIPs.
    sh("ip", "-n", node, "route", "add", "default", "via", OUTSIDE_IP)
    cluster.add_ns("node2")
    node2 = cluster.ns("node2")
    sh("ip", "netns", "exec", node2, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    sh("ip", "-n", node2, "addr", "add", f"{NODE2_GATEWAY}/32", "dev", "lo")
    sh("ip", "link", "add", "peer0", "netns", node, "type", "veth", "peer", "name", "peer0", "netns", node2)
    for ns, address in ((node, NODE_LINK[0]), (node2, NODE_LINK[1])):
        sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "peer0")
        sh("ip", "-n", ns, "link", "set", "peer0", "up")
    sh("ip", "-n", node, "route", "add", "10.244.1.0/24", "via", NODE_LINK[1])
    sh("ip", "-n", node2, "route", "add", "default", "via", NODE_LINK[0])
    cluster.add_pod("p4", REMOTE_IP, "veth4", node="node2", gateway=NODE2_GATEWAY)
    for name in (*SERVERS, "p4"):
        cluster.start_server(name)


def pod_ips(servers: dict[str, str]) -> dict[str, str]:
    fixed = {"default/client": CLIENT_IP, "default/p4": REMOTE_IP}
    return {f"default/{name}": ip for name, ip in servers.items()} | fixed


def views(servers: dict[str, str] = SERVERS):
    return build_service_view(parse_manifests(MANIFESTS, "dataplane.yaml"), pod_ips(servers),
                              service_cidr=SERVICE_CIDR, dns_ip="10.96.0.10")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster(f"lkt-px-{secrets.token_hex(3)}")
    try:
        build(c)
        for node in ("node", "node2"):
            apply_node_services(c.path(node), views(), pod_cidr=POD_CIDR)
        yield c
    finally:
        c.teardown()
    assert c.leftovers() == []


@pytest.fixture(scope="module")
def ips() -> dict[str, str]:
    return {v.name: v.cluster_ip for v in views()}


def names(results: list[dict]) -> Counter:
    assert all(r["ok"] for r in results), results
    return Counter(r["reply"].split()[0] for r in results)


def test_cluster_ip_connects_without_nat_of_the_client(cluster, ips):
    (result,) = cluster.run("client", "tcp", ips["web"], 80)
    assert result["ok"], result
    pod, peer = result["reply"].split()
    assert pod in SERVERS
    assert peer == CLIENT_IP  # pod-to-service keeps the client's address


def test_connections_spread_over_every_endpoint(cluster, ips):
    hits = names(cluster.run("client", "tcp", ips["web"], 80, count=60))
    assert set(hits) == set(SERVERS), hits
    assert max(hits.values()) <= 40, hits  # no endpoint above twice its fair share


def test_client_ip_affinity_pins_a_client(cluster, ips):
    hits = names(cluster.run("client", "tcp", ips["sticky"], 81, count=20))
    assert len(hits) == 1, hits
    again = names(cluster.run("client", "tcp", ips["sticky"], 81, count=5))
    assert again.keys() == hits.keys()
    # Another client (a process in the node) is pinned too, independently.
    assert len(names(cluster.run("node", "tcp", ips["sticky"], 81, count=10))) == 1
    # Without affinity the same client spreads (the pinning is the service's, not chance).
    assert len(names(cluster.run("client", "tcp", ips["web"], 80, count=20))) >= 2


def test_service_without_endpoints_is_refused_at_once(cluster, ips):
    # refused (a reject rule's RST or ICMP port unreachable), not a TimeoutError after 3 s
    results = cluster.run("client", "tcp", ips["empty"], 80, count=3)
    for result in results:
        assert not result["ok"] and result["error"] == "ConnectionRefusedError", result
    (outside,) = cluster.run("outside", "tcp", NODE_OUTSIDE_IP, 30099)
    assert outside["error"] == "ConnectionRefusedError", outside
    (udp,) = cluster.run("client", "udp", ips["empty"], 53)  # ICMP port unreachable, not a timeout
    assert udp["error"] == "ConnectionRefusedError", udp


def test_node_port_from_outside_is_masqueraded(cluster):
    results = cluster.run("outside", "tcp", NODE_OUTSIDE_IP, 30080, count=12)
    hits = names(results)
    assert set(hits) <= set(SERVERS) and len(hits) >= 2, hits
    peers = {r["reply"].split()[1] for r in results}
    assert OUTSIDE_IP not in peers  # the pod answers the node, which un-NATs the reply


def test_hairpin_pod_reaches_itself_through_its_service(cluster, ips):
    results = cluster.run("p1", "tcp", ips["self"], 80, count=3)
    assert names(results) == Counter({"p1": 3})
    peers = {r["reply"].split()[1] for r in results}
    assert SERVERS["p1"] not in peers, peers  # masqueraded to the node, so the reply comes back


def test_node_processes_reach_cluster_ips(cluster, ips):
    hits = names(cluster.run("node", "tcp", ips["web"], 80, count=6))
    assert set(hits) <= set(SERVERS)


def test_udp_service(cluster, ips):
    results = cluster.run("client", "udp", ips["web"], 53, count=30)
    hits = names(results)
    assert len(hits) >= 2, hits
    assert {r["reply"].split()[1] for r in results} == {CLIENT_IP}


def test_rule_set_is_listed_and_reapplying_is_idempotent(cluster):
    before = nft.list_ruleset(cluster.path("node"), "labkit-proxy")
    assert "map service-ips" in before and "service-nodeports" in before
    apply_node_services(cluster.path("node"), views(), pod_cidr=POD_CIDR)
    after = nft.list_ruleset(cluster.path("node"), "labkit-proxy")
    strip = [line for line in before.splitlines() if "elements" not in line]
    assert strip == [line for line in after.splitlines() if "elements" not in line]
    assert after.count("table ip labkit-proxy") == 1


def test_reapplying_after_endpoints_change_takes_effect(cluster, ips):
    node = cluster.path("node")
    try:
        only_p2 = {"p2": SERVERS["p2"]}
        apply_node_services(node, views(only_p2), pod_cidr=POD_CIDR)
        assert names(cluster.run("client", "tcp", ips["web"], 80, count=15)) == Counter({"p2": 15})
        apply_node_services(node, views({}), pod_cidr=POD_CIDR)
        (refused,) = cluster.run("client", "tcp", ips["web"], 80)
        assert refused["error"] == "ConnectionRefusedError", refused
    finally:
        apply_node_services(node, views(), pod_cidr=POD_CIDR)
    assert len(names(cluster.run("client", "tcp", ips["web"], 80, count=30))) >= 2


def test_udp_flows_to_removed_endpoints_are_cleared(cluster, ips):
    node = cluster.path("node")
    (first,) = cluster.run("client", "udp", ips["web"], 53, source_port=40053)
    pinned = first["reply"].split()[0]
    # The same source port keeps its conntrack entry, hence its endpoint.
    assert names(cluster.run("client", "udp", ips["web"], 53, count=5, source_port=40053)) == Counter({pinned: 5})
    remaining = {n: ip for n, ip in SERVERS.items() if n != pinned}
    try:
        apply_node_services(node, views(remaining), pod_cidr=POD_CIDR, previous=views())
        hits = names(cluster.run("client", "udp", ips["web"], 53, count=5, source_port=40053))
        assert pinned not in hits and len(hits) == 1, hits
    finally:
        apply_node_services(node, views(), pod_cidr=POD_CIDR, previous=views(remaining))


def test_endpoint_on_another_node_sees_the_client_address(cluster, ips):
    results = cluster.run("client", "tcp", ips["remote"], 80, count=3)
    assert names(results) == Counter({"p4": 3})
    assert {r["reply"].split()[1] for r in results} == {CLIENT_IP}  # routed, not NATed
    # And the other way: a pod on node2 reaches a service whose endpoint is on node1.
    results = cluster.run("p4", "tcp", ips["self"], 80, count=3)
    assert names(results) == Counter({"p1": 3})
    assert {r["reply"].split()[1] for r in results} == {REMOTE_IP}


def test_node_port_forwards_to_an_endpoint_on_another_node(cluster):
    results = cluster.run("outside", "tcp", NODE_OUTSIDE_IP, 30081, count=3)
    assert names(results) == Counter({"p4": 3})


def test_nft_errors_name_the_line(cluster):
    bad = "table ip lkt-px-bad {\n\tchain a {\n\t\tip daddr 10.0.0.300 accept\n\t}\n}\n"
    with pytest.raises(LabkitError) as exc:
        nft.apply_ruleset(cluster.path("node"), bad)
    assert "line 3: ip daddr 10.0.0.300 accept" in str(exc.value)
    assert "lkt-px-bad" not in nft.list_ruleset(cluster.path("node"))


def test_remove_is_idempotent(cluster):
    path = cluster.path("client")
    apply_node_services(path, views(), pod_cidr=POD_CIDR, table="lkt-px-tmp")
    remove_node_services(path, "lkt-px-tmp")
    remove_node_services(path, "lkt-px-tmp")
    assert "lkt-px-tmp" not in nft.list_ruleset(path)


def test_node_ips_variant_applies(cluster):
    path = cluster.path("client")
    try:
        apply_node_services(path, views(), pod_cidr=POD_CIDR, node_ips=[CLIENT_IP], table="lkt-px-np")
        assert "nodeport-ips" in nft.list_ruleset(path, "lkt-px-np")
    finally:
        remove_node_services(path, "lkt-px-np")

