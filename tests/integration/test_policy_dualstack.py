"""NetworkPolicy in a live dual-stack cluster (both runtimes' worth of plumbing: CNI, host-gw per family,
the node network's IPv6): every pod has an IPv4 and an IPv6 address, and one policy table per node
judges both. A pod peer admits both of a pod's addresses, an IPv6 ipBlock (with except) only IPv6,
the node a pod runs on reaches it over both families, and neighbour discovery is never blocked
(the pods answer their node over IPv6 although their egress is denied). The lab is shared by this
module's tests."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from labkit.pytest_plugin import RunningLab, start_lab

# x/a, y/a, z/a on n1; x/b, y/b, z/b on n2; each serves TCP 80 on both families.
POD = """apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{pod: {name}}}}}
spec:
  nodeName: {node}
  containers:
    - name: serve
      image: labkit/node
      command: ["socat", "TCP6-LISTEN:80,ipv6only=0,reuseaddr,fork", "SYSTEM:echo {ns}/{name}"]
      ports: [{{name: http, containerPort: 80}}]
"""
POLICIES = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-y, namespace: x}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: v6-but-n2, namespace: z}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress: [{to: [{ipBlock: {cidr: "fd00:10:244::/56", except: ["fd00:10:244:1::/64"]}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress, namespace: y}
spec: {podSelector: {matchLabels: {pod: b}}, policyTypes: [Egress]}
"""
TOPOLOGY = """name: npds
cluster:
  pod-cidr: 10.244.0.0/16,fd00:10:244::/56       # n1: 10.244.0.0/24 + fd00:10:244::/64, n2: ...1.0/24 + :1::/64
  service-cidr: 10.96.0.0/16,fd00:10:96::/112
  cni: {backend: host-gw}
topology:
  nodes:
    n1: {kind: k8s-node}
    n2: {kind: k8s-node}
workloads: [workloads.yaml]
"""


@pytest.fixture(scope="module")
def dual(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> RunningLab:
    folder = tmp_path_factory.mktemp("policy-dualstack")
    docs = []
    for ns in "xyz":
        docs.append(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{ns: {ns}}}}}\n")
        docs += [POD.format(name=name, ns=ns, node=node) for name, node in (("a", "n1"), ("b", "n2"))]
    (folder / "workloads.yaml").write_text("---\n".join([*docs, POLICIES]))
    (folder / "npds.yaml").write_text(TOPOLOGY)
    return start_lab(request, Path(folder / "npds.yaml"))


def reach(lab: RunningLab, source: str, target: str, family: int) -> bool:
    """Whether `source` (a pod or node) gets the answer of `target` (a pod) over TCP 80 in `family`;
    a blocked connection gives up after a second and a half (SYNs are dropped, not refused)."""
    pod = lab.pods()[target]
    address = next(ip for ip in pod["ips"] if (":" in ip) == (family == 6))
    spec = f"TCP6:[{address}]:80" if family == 6 else f"TCP4:{address}:80"
    out = lab.exec(source, "socat", "-T2", "-", f"{spec},connect-timeout=1.5", timeout=10)
    return out.returncode == 0 and out.stdout.strip() == target


# (source, target, open over IPv4, open over IPv6)
CELLS = [
    ("y/a", "x/a", True, True),     # from-y: a pod peer is both of its addresses
    ("y/a", "x/b", True, True),     # ... on the other node too
    ("z/b", "x/a", False, False),   # z is not y, in neither family
    ("x/b", "x/a", False, False),
    ("z/a", "y/a", False, True),    # v6-but-n2: an IPv6 block allows no IPv4 ...
    ("z/a", "x/b", False, False),   # ... and not n2's /64, its except
    ("z/a", "z/a", True, True),     # a pod reaches itself (loopback)
    ("n1", "x/a", True, True),      # the own node always
    ("n2", "x/a", False, False),    # another node is no pod of y
    ("n2", "y/b", True, True),      # y/b's egress is denied, but it answers (and resolves) its node
    ("y/b", "z/b", False, False),
]


@pytest.fixture(scope="module")
def observed(dual: RunningLab) -> dict[tuple[str, str, int], bool]:
    """Every cell in both families, probed at once."""
    probes = [(s, t, f) for s, t, _, _ in CELLS for f in (4, 6)]
    with ThreadPoolExecutor(len(probes)) as pool:
        return dict(zip(probes, pool.map(lambda p: reach(dual, *p), probes), strict=True))


@pytest.mark.parametrize(("source", "target", "v4", "v6"), CELLS, ids=[f"{s}->{t}" for s, t, _, _ in CELLS])
def test_both_families_follow_the_policies(observed, source: str, target: str, v4: bool, v6: bool):
    assert (observed[source, target, 4], observed[source, target, 6]) == (v4, v6)


def test_one_table_per_node_holds_both_families(dual: RunningLab):
    table = dual.exec("n1", "nft", "list", "table", "inet", "labkit-policy").stdout
    x_a = dual.pods()["x/a"]["ips"]
    assert len(x_a) == 2 and ":" in x_a[1]
    for ip in x_a:
        assert ip in table
    assert "map ingress-pods6" in table and "set peers6-" in table and "nd-neighbor-solicit" in table
