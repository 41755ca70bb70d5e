"""NetworkPolicy truth tables on a hand-built two-node cluster, in both pod attachment modes.

The upstream network-policy e2e layout: namespaces x, y, z with pods a, b, c each, spread over two
nodes routed host-gw style (DESIGN.md section 7), every pod serving TCP 80/81 and UDP 80/81/53, every node TCP 80.
Pods attach as labkit-cni attaches them: routed /32 veths (ptp), or ports of a bridge cni0 holding the
gateway (bridge, kubenet), where pods of one node talk at layer 2 and only br_netfilter
(`bridge-nf-call-iptables`, which the plugin sets) brings that traffic to the policy's forward hook.
Every namespace is `lkt-np-<random>-*`. Each case of tests/manifests/policy/cases.yaml, and each
step of the upstream e2e corpus (tests/manifests/policy/upstream.yaml, with its label changes), is applied
to both nodes with `apply_node_policies` (replacing the previous case's table) and probed from
every pod (and node, where the case asks) to every pod with a short timeout, in parallel: one agent
process per namespace serves and probes. A probe expected open that failed is tried once more
with a long timeout before it counts, so a loaded machine does not fail the suite.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator, Mapping

import pytest

from labkit.net import nft
from labkit.policy import DEFAULT_TABLE, FAMILY, apply_node_policies, remove_node_policies
from labkit.topology.kinds import CNI_MODES
from tests.unit.test_policy_cases import (
    CASES,
    LAYOUT,
    NODES,
    POD_IPS,
    SERVICE,
    UPSTREAM,
    Case,
    Matrix,
    Step,
    explain,
    node_ips,
    pod_nodes,
    workloads,
)

pytestmark = pytest.mark.integration

FAST = 0.5  # seconds a probe waits before it counts as blocked
SLOW = 3.0  # the second chance of a probe expected open
SERVED = ("tcp/80", "tcp/81", "udp/80", "udp/81", "udp/53")

# Serves the ports named in argv (answering "ok"), and probes: each stdin line is a JSON list of
# [protocol, host, port, timeout]; the answer is one JSON line of booleans, probed in parallel.
AGENT = r"""
import json, socket, sys, threading
from concurrent.futures import ThreadPoolExecutor

def tcp_server(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(512)
    while True:
        conn, _ = s.accept()
        try:
            conn.sendall(b"ok")
        except OSError:
            pass
        conn.close()

def udp_server(port):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", port))
    while True:
        _, peer = u.recvfrom(64)
        u.sendto(b"ok", peer)

for item in sys.argv[1:]:
    proto, port = item.split("/")
    serve = tcp_server if proto == "tcp" else udp_server
    threading.Thread(target=serve, args=(int(port),), daemon=True).start()

def probe(proto, host, port, timeout):
    try:
        if proto == "tcp":
            with socket.create_connection((host, port), timeout=timeout) as s:
                return s.recv(2) == b"ok"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout); s.connect((host, port)); s.send(b"hi")
            return s.recv(2) == b"ok"
    except OSError:
        return False

pool = ThreadPoolExecutor(64)
print("ready", flush=True)
for line in sys.stdin:
    batch = json.loads(line)
    print(json.dumps(list(pool.map(lambda p: probe(*p), batch))), flush=True)
"""


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)


class PolicyCluster:
    """Two node namespaces, nine pod namespaces, one agent per namespace; torn down whatever happens."""

    def __init__(self, prefix: str, mode: str = "ptp"):
        self.prefix = prefix
        self.mode = mode
        self.namespaces: list[str] = []
        self.agents: dict[str, subprocess.Popen] = {}
        self.placement: dict[str, str] = {}

    def ns(self, short: str) -> str:
        return f"{self.prefix}-{short.replace('/', '-')}"

    def path(self, short: str) -> str:
        return f"/run/netns/{self.ns(short)}"

    def add_ns(self, short: str) -> str:
        name = self.ns(short)
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def build(self) -> None:
        for node, spec in NODES.items():
            ns = self.add_ns(node)
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            if self.mode == "bridge":  # what labkit-cni's bridge mode makes of a node
                plen = spec["pod_cidr"].split("/")[1]
                sh("ip", "-n", ns, "link", "add", "cni0", "up", "type", "bridge")
                sh("ip", "-n", ns, "addr", "add", f"{spec['gateway']}/{plen}", "dev", "cni0")
                sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1")
            else:
                sh("ip", "-n", ns, "addr", "add", f"{spec['gateway']}/32", "dev", "lo")
        (node1, spec1), (node2, spec2) = NODES.items()
        sh("ip", "link", "add", "peer0", "netns", self.ns(node1), "type", "veth",
           "peer", "name", "peer0", "netns", self.ns(node2))
        for node, spec, other in ((node1, spec1, spec2), (node2, spec2, spec1)):
            ns = self.ns(node)
            sh("ip", "-n", ns, "addr", "add", f"{spec['link_ip']}/24", "dev", "peer0")
            sh("ip", "-n", ns, "link", "set", "peer0", "up")
            sh("ip", "-n", ns, "route", "add", other["pod_cidr"], "via", other["link_ip"])
        self.placement = pod_nodes(workloads())
        for pod, ip in POD_IPS.items():
            self.add_pod(pod, ip, self.placement[pod])
        service = LAYOUT["service"]
        endpoint = POD_IPS[service["endpoint"]]
        # A ClusterIP as kube-proxy would make it, on every node: DNAT before the policy sees it.
        for node in NODES:
            nft.apply_ruleset(self.path(node), (
                "table ip svc-emulation {\n"
                "\tchain prerouting {\n"
                "\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
                f"\t\tip daddr {service['ip']} tcp dport {service['port']} dnat to {endpoint}:80\n"
                "\t}\n}\n"
            ))
        for pod in POD_IPS:
            self.start_agent(pod, SERVED)
        for node in NODES:
            self.start_agent(node, ("tcp/80",))

    def add_pod(self, pod: str, ip: str, node: str) -> None:
        ns, node_ns = self.add_ns(pod), self.ns(node)
        gateway, veth = NODES[node]["gateway"], f"v-{pod.replace('/', '-')}"
        sh("ip", "link", "add", veth, "netns", node_ns, "type", "veth", "peer", "name", "eth0", "netns", ns)
        if self.mode == "bridge":
            sh("ip", "-n", ns, "addr", "add", f"{ip}/{NODES[node]['pod_cidr'].split('/')[1]}", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", gateway, "dev", "eth0")
            sh("ip", "-n", node_ns, "link", "set", veth, "master", "cni0", "up")
            sh("ip", "-n", node_ns, "link", "set", veth, "type", "bridge_slave", "hairpin", "on")
            return
        sh("ip", "-n", ns, "addr", "add", f"{ip}/32", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "route", "add", gateway, "dev", "eth0", "scope", "link")
        sh("ip", "-n", ns, "route", "add", "default", "via", gateway, "dev", "eth0")
        sh("ip", "-n", node_ns, "link", "set", veth, "up")
        sh("ip", "-n", node_ns, "route", "add", f"{ip}/32", "dev", veth)

    def start_agent(self, short: str, serve: tuple[str, ...]) -> None:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(short), sys.executable, "-c", AGENT, *serve],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.agents[short] = proc
        line = proc.stdout.readline().strip()
        assert line == "ready", f"agent in {short} did not start: {line} {proc.stderr.read()}"

    def apply(self, policies: str, relabel: Mapping[str, Mapping[str, str]] | None = None) -> None:
        w = workloads(policies, relabel)
        for node in NODES:
            apply_node_policies(self.path(node), w, POD_IPS, node_name=node, pod_nodes=self.placement,
                                node_ips=node_ips(node))

    def address(self, target: str, port: int) -> tuple[str, int]:
        if target == SERVICE:
            return LAYOUT["service"]["ip"], LAYOUT["service"]["port"]
        if target in NODES:
            return NODES[target]["gateway"], port
        return POD_IPS[target], port

    def probe(self, cells: list[tuple[str, str, str]], timeout: float) -> dict[tuple[str, str, str], bool]:
        """Every (probe, source, target) at once: one batch per source agent, all agents in parallel."""
        batches: dict[str, list[tuple[str, str, str]]] = {}
        for cell in cells:
            batches.setdefault(cell[1], []).append(cell)
        for source, batch in batches.items():
            lines = []
            for probe, _, target in batch:
                protocol, port = probe.split("/")
                lines.append([protocol, *self.address(target, int(port)), timeout])
            self.agents[source].stdin.write(json.dumps(lines) + "\n")
            self.agents[source].stdin.flush()
        results = {}
        for source, batch in batches.items():
            answer = json.loads(self.agents[source].stdout.readline())
            results.update(zip(batch, answer, strict=True))
        return results

    def observe(self, expectations: Mapping[str, Matrix]) -> dict[str, Matrix]:
        """Every matrix of a case probed at once; probes expected open get a second, slow chance."""
        cells = [(probe, s, t) for probe, m in expectations.items() for (s, t), mark in m.cells.items()
                 if mark != "-"]
        seen = self.probe(cells, FAST)
        retry = [c for c in cells if not seen[c] and expectations[c[0]].cells[c[1], c[2]] == "."]
        if retry:
            seen.update(self.probe(retry, SLOW))
        return {
            probe: Matrix.of(m, lambda s, t, probe=probe: "." if seen[probe, s, t] else "X")
            for probe, m in expectations.items()
        }

    def teardown(self) -> None:
        for proc in self.agents.values():
            proc.kill()
        for proc in self.agents.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass  # still deleting the namespaces below; leftovers() will tell
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                stream.close()
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)

    def leftovers(self) -> list[str]:
        listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        return [line.split()[0] for line in listing.splitlines() if line.startswith(self.prefix)]


@pytest.fixture(scope="module", params=CNI_MODES)
def cluster(request) -> Iterator[PolicyCluster]:
    c = PolicyCluster(f"lkt-np-{secrets.token_hex(3)}", request.param)
    try:
        c.build()
        yield c
    finally:
        c.teardown()
    assert c.leftovers() == []


def open_grid(sources: tuple[str, ...], targets: tuple[str, ...]) -> Matrix:
    """Every cell open; not checked: the service from its own endpoint (hairpin) or from a node
    (the emulated ClusterIP is DNATed in prerouting only)."""
    unchecked = {(LAYOUT["service"]["endpoint"], SERVICE), *((n, SERVICE) for n in NODES)}
    return Matrix(sources, targets, {(s, t): "-" if (s, t) in unchecked else "."
                                     for s in sources for t in targets})


def everything_open(like: Matrix) -> Matrix:
    """`like`, every cell open but those it does not check."""
    return Matrix.of(like, lambda s, t: ".")


def check(cluster: PolicyCluster, name: str, expectations: Mapping[str, Matrix]) -> None:
    observed = cluster.observe(expectations)
    failures = [explain(name, probe, expected, observed[probe])
                for probe, expected in expectations.items() if expected.differences(observed[probe])]
    assert not failures, "\n\n".join(failures)


NODE_CASE = next(c for c in CASES if any("node1" in m.sources for m in c.expect.values()))


def test_without_policies_everything_is_open(cluster):
    remove_node_policies(cluster.path("node1"))
    remove_node_policies(cluster.path("node2"))
    pods, nodes = tuple(POD_IPS), tuple(NODES)
    check(cluster, "no policies", {
        "tcp/80": open_grid(pods + nodes, pods + nodes + (SERVICE,)),  # nodes serve TCP 80 only
        "udp/81": open_grid(pods, pods),
    })


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_truth_table(cluster, case: Case):
    cluster.apply(case.policies)
    check(cluster, case.name, case.expect)


@pytest.mark.parametrize("step", UPSTREAM, ids=lambda s: s.name)
def test_upstream_case(cluster, step: Step):
    """The Kubernetes e2e network-policy suite's TCP and UDP cases; a step that differs prints
    upstream's `.`/`X` truth table, expected and observed."""
    cluster.apply(step.policies, step.relabel)
    check(cluster, f"{step.name} ({step.upstream})", step.expect)


def test_reapplying_replaces_the_table_atomically(cluster):
    case = next(c for c in CASES if c.name == "two-policies-add-up")
    cluster.apply(case.policies)
    first = nft.list_ruleset(cluster.path("node1"), DEFAULT_TABLE, family=FAMILY)
    cluster.apply(case.policies)
    again = nft.list_ruleset(cluster.path("node1"), DEFAULT_TABLE, family=FAMILY)
    assert first == again
    whole = nft.list_ruleset(cluster.path("node1"))
    assert whole.count(f"table {FAMILY} {DEFAULT_TABLE}") == 1
    assert "chain ingress-" in first and "set peers-" in first
    # node2 guards none of x/a's traffic: x/a lives on node1, so node2 has no pod chains at all.
    assert "chain ingress-" not in nft.list_ruleset(cluster.path("node2"), DEFAULT_TABLE, family=FAMILY)
    check(cluster, case.name, case.expect)


def test_remove_is_idempotent_and_opens_everything(cluster):
    cluster.apply(next(c for c in CASES if c.name == "own-node-always-allowed").policies)
    for node in NODES:
        remove_node_policies(cluster.path(node))
        remove_node_policies(cluster.path(node))
        assert f"{FAMILY} {DEFAULT_TABLE}" not in nft.list_ruleset(cluster.path(node))
    check(cluster, "removed", {"tcp/80": everything_open(NODE_CASE.expect["tcp/80"])})
