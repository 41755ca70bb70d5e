"""NetworkPolicy truth tables on a hand-built two-node cluster, in both pod attachment modes, IPv4-only
and dual-stack.

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

The dual-stack labs give every pod and node the IPv6 twin of its address too (fd00:64::/96, see
tests/unit/test_policy_cases.py) and wire it as labkit-cni does (ptp: the gateway's /128 on each
host veth, since a node answers Neighbor Solicitations only for addresses of the interface they
arrive on; bridge: the gateway on cni0 and `bridge-nf-call-ip6tables`), every address `nodad`;
each case's policies follow the stack, and every table is probed over both families at once.
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
    STACKS,
    UPSTREAM,
    Case,
    Matrix,
    Step,
    explain,
    node_ips,
    of_family,
    pod_ips,
    pod_nodes,
    policies_for,
    twin,
    workloads,
)

pytestmark = pytest.mark.integration

FAST = 0.5  # seconds a probe waits before it counts as blocked
SLOW = 3.0  # the second chance of a probe expected open
SERVED = ("tcp/80", "tcp/81", "udp/80", "udp/81", "udp/53")

# Serves the ports named in argv[2:] (answering "ok") on the families of argv[1] ("4", "46"), and
# probes: each stdin line is a JSON list of [protocol, host, port, timeout]; the answer is one JSON
# line of booleans, probed in parallel.
AGENT = r"""
import json, socket, sys, threading
from concurrent.futures import ThreadPoolExecutor

def bound(family, kind, port):
    s = socket.socket(family, kind); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    return s

def tcp_server(family, port):
    s = bound(family, socket.SOCK_STREAM, port); s.listen(512)
    while True:
        conn, _ = s.accept()
        try:
            conn.sendall(b"ok")
        except OSError:
            pass
        conn.close()

def udp_server(family, port):
    u = bound(family, socket.SOCK_DGRAM, port)
    while True:
        _, peer = u.recvfrom(64)
        u.sendto(b"ok", peer)

FAMILIES = {"4": socket.AF_INET, "6": socket.AF_INET6}
for item in sys.argv[2:]:
    proto, port = item.split("/")
    serve = tcp_server if proto == "tcp" else udp_server
    for f in sys.argv[1]:
        threading.Thread(target=serve, args=(FAMILIES[f], int(port)), daemon=True).start()

def probe(proto, host, port, timeout):
    try:
        if proto == "tcp":
            with socket.create_connection((host, port), timeout=timeout) as s:
                return s.recv(2) == b"ok"
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as s:
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


Cell = tuple[int, str, str, str]  # (family, probe, source, target)


class PolicyCluster:
    """Two node namespaces, nine pod namespaces, one agent per namespace; torn down whatever happens."""

    def __init__(self, prefix: str, mode: str = "ptp", stack: str = "ipv4"):
        self.prefix = prefix
        self.mode = mode
        self.stack = stack
        self.families = STACKS[stack]
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
        if 6 in self.families:  # usable addresses at once: no DAD (every address is ours), no RAs
            sh("ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
               "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_ra=0",
               "net.ipv6.conf.default.accept_ra=0")
        return name

    def addr(self, ns: str, address: str, plen: int, dev: str) -> None:
        """`address`/`plen` of IPv4's layout, on `dev`, in every family of the lab (IPv6: the twin, nodad)."""
        sh("ip", "-n", ns, "addr", "add", f"{address}/{plen}", "dev", dev)
        if 6 in self.families:
            sh("ip", "-n", ns, "addr", "add", f"{twin(address)}/{96 + plen}", "dev", dev, "nodad")

    def route(self, ns: str, destination: str, *rest: str) -> None:
        """`ip route add destination rest...` in every family of the lab (IPv4 addresses twinned for IPv6)."""
        sh("ip", "-n", ns, "route", "add", destination, *rest)
        if 6 in self.families:
            sh("ip", "-n", ns, "-6", "route", "add", twin(destination) if destination != "default" else destination,
               *(twin(word) if word[0].isdigit() and "." in word else word for word in rest))

    def build(self) -> None:
        for node, spec in NODES.items():
            ns = self.add_ns(node)
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            if 6 in self.families:
                sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
            if self.mode == "bridge":  # what labkit-cni's bridge mode makes of a node
                plen = int(spec["pod_cidr"].split("/")[1])
                sh("ip", "-n", ns, "link", "add", "cni0", "up", "type", "bridge")
                self.addr(ns, spec["gateway"], plen, "cni0")
                sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1")
                if 6 in self.families:
                    sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.bridge.bridge-nf-call-ip6tables=1")
            else:
                sh("ip", "-n", ns, "addr", "add", f"{spec['gateway']}/32", "dev", "lo")
        (node1, spec1), (node2, spec2) = NODES.items()
        sh("ip", "link", "add", "peer0", "netns", self.ns(node1), "type", "veth",
           "peer", "name", "peer0", "netns", self.ns(node2))
        for node, spec, other in ((node1, spec1, spec2), (node2, spec2, spec1)):
            ns = self.ns(node)
            self.addr(ns, spec["link_ip"], 24, "peer0")
            sh("ip", "-n", ns, "link", "set", "peer0", "up")
            self.route(ns, other["pod_cidr"], "via", other["link_ip"])
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
            if 6 in self.families:
                nft.apply_ruleset(self.path(node), (
                    "table ip6 svc-emulation {\n"
                    "\tchain prerouting {\n"
                    "\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
                    f"\t\tip6 daddr {twin(service['ip'])} tcp dport {service['port']} dnat to [{twin(endpoint)}]:80\n"
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
            self.addr(ns, ip, int(NODES[node]["pod_cidr"].split("/")[1]), "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            self.route(ns, "default", "via", gateway, "dev", "eth0")
            sh("ip", "-n", node_ns, "link", "set", veth, "master", "cni0", "up")
            sh("ip", "-n", node_ns, "link", "set", veth, "type", "bridge_slave", "hairpin", "on")
            return
        self.addr(ns, ip, 32, "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "route", "add", gateway, "dev", "eth0", "scope", "link")
        if 6 in self.families:
            sh("ip", "-n", ns, "-6", "route", "add", twin(gateway), "dev", "eth0")
        self.route(ns, "default", "via", gateway, "dev", "eth0")
        if 6 in self.families:  # IPv6's gateway on the host veth itself (NDP answers per interface)
            sh("ip", "-n", node_ns, "addr", "add", f"{twin(gateway)}/128", "dev", veth, "nodad")
        sh("ip", "-n", node_ns, "link", "set", veth, "up")
        self.route(node_ns, f"{ip}/32", "dev", veth)

    def start_agent(self, short: str, serve: tuple[str, ...]) -> None:
        families = "".join(str(f) for f in self.families)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(short), sys.executable, "-c", AGENT, families, *serve],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.agents[short] = proc
        line = proc.stdout.readline().strip()
        assert line == "ready", f"agent in {short} did not start: {line} {proc.stderr.read()}"

    def apply(self, policies: str, relabel: Mapping[str, Mapping[str, str]] | None = None, *,
              as_written: bool = False) -> None:
        """Apply `policies` on both nodes, their ipBlocks following the lab's stack unless `as_written`."""
        w = workloads(policies if as_written else policies_for(policies, self.stack), relabel)
        ips = pod_ips(self.stack)
        for node in NODES:
            apply_node_policies(self.path(node), w, ips, node_name=node, pod_nodes=self.placement,
                                node_ips=node_ips(node, self.families))

    def address(self, family: int, target: str, port: int) -> tuple[str, int]:
        if target == SERVICE:
            return of_family(LAYOUT["service"]["ip"], family), LAYOUT["service"]["port"]
        if target in NODES:
            return of_family(NODES[target]["gateway"], family), port
        return of_family(POD_IPS[target], family), port

    def probe(self, cells: list[Cell], timeout: float) -> dict[Cell, bool]:
        """Every (family, probe, source, target) at once: one batch per source agent, all agents in parallel."""
        batches: dict[str, list[Cell]] = {}
        for cell in cells:
            batches.setdefault(cell[2], []).append(cell)
        for source, batch in batches.items():
            lines = []
            for family, probe, _, target in batch:
                protocol, port = probe.split("/")
                lines.append([protocol, *self.address(family, target, int(port)), timeout])
            self.agents[source].stdin.write(json.dumps(lines) + "\n")
            self.agents[source].stdin.flush()
        results = {}
        for source, batch in batches.items():
            answer = json.loads(self.agents[source].stdout.readline())
            results.update(zip(batch, answer, strict=True))
        return results

    def observe(self, expectations: Mapping[int, Mapping[str, Matrix]]) -> dict[int, dict[str, Matrix]]:
        """Every matrix of a case, of every family, probed at once; probes expected open get a second,
        slow chance."""
        cells = [(family, probe, s, t) for family, tables in expectations.items()
                 for probe, m in tables.items() for (s, t), mark in m.cells.items() if mark != "-"]
        seen = self.probe(cells, FAST)
        retry = [c for c in cells if not seen[c] and expectations[c[0]][c[1]].cells[c[2], c[3]] == "."]
        if retry:
            seen.update(self.probe(retry, SLOW))
        return {
            family: {probe: Matrix.of(m, lambda s, t, family=family, probe=probe:
                                      "." if seen[family, probe, s, t] else "X")
                     for probe, m in tables.items()}
            for family, tables in expectations.items()
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


# A dual-stack lab probes both families at once, so it holds the IPv4 truth tables too: every mode runs
# dual-stack, and the IPv4-only table shape (no ip6 parts at all) runs live once, in the default mode.
LABS = [pytest.param((CNI_MODES[0], "ipv4"), id=CNI_MODES[0])] + [
    pytest.param((mode, "dual-stack"), id=f"{mode}-dual-stack") for mode in CNI_MODES]


@pytest.fixture(scope="module", params=LABS)
def cluster(request) -> Iterator[PolicyCluster]:
    mode, stack = request.param
    c = PolicyCluster(f"lkt-np-{secrets.token_hex(3)}", mode, stack)
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


def check(cluster: PolicyCluster, name: str, expectations: Mapping[str, Matrix],
          ipv6: Mapping[str, Matrix] | None = None) -> None:
    """The tables hold over every family of the lab (IPv6: `ipv6`, when it sees other tables)."""
    per_family = {f: ipv6 if f == 6 and ipv6 is not None else expectations for f in cluster.families}
    observed = cluster.observe(per_family)
    failures = [explain(f"{name} IPv{family}", probe, expected, observed[family][probe])
                for family, tables in per_family.items() for probe, expected in tables.items()
                if expected.differences(observed[family][probe])]
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
    cluster.apply(case.policies, as_written=case.as_written)
    check(cluster, case.name, case.expect, case.expect_ipv6)


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
    assert ("map ingress-pods6" in first and "icmpv6 type" in first) == (6 in cluster.families)
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


def test_neighbour_resolution_survives_deny_all(cluster):
    """Every pod isolated both ways, every neighbour cache emptied: a node still reaches its own
    pods, so it resolved them and they answered (ARP never meets the table; ICMPv6 neighbour
    discovery, from the pod's own address, must not be judged as its egress)."""
    deny = "\n---\n".join(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        f"metadata: {{name: deny-all, namespace: {ns}}}\nspec: {{podSelector: {{}}, policyTypes: [Ingress, Egress]}}"
        for ns in ("x", "y", "z"))
    cluster.apply(deny)
    for short in (*NODES, *POD_IPS):
        sh("ip", "-n", cluster.ns(short), "neigh", "flush", "all")
    pods = tuple(POD_IPS)
    expected = Matrix(pods + tuple(NODES), pods, {
        (s, t): "." if s == t or cluster.placement[t] == s else ("-" if s in NODES else "X")
        for s in pods + tuple(NODES) for t in pods})
    check(cluster, "deny-all, neighbours forgotten", {"tcp/80": expected})
