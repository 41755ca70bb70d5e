"""The NetworkPolicy truth tables of tests/manifests/policy, checked on the compiled model (no root).

The integration suite (tests/integration/test_policy_matrix.py) probes the same tables on real
namespaces; this module owns the case files and their matrix format, and evaluates each case the
way the nodes do: egress on the source pod's node, ingress on the destination pod's node, after
DNAT, with the own node and loopback always allowed.

Every table holds in three stacks: `ipv4` (the layout as written), `ipv6` (every address of the
layout replaced by its IPv6 twin: the IPv4 address embedded in the ULA prefix fd00:64::/96, so
10.244.1.10 is fd00:64::af4:10a and 10.244.0.0/16 is fd00:64::af4:0/112), and `dual-stack` (pods
and nodes with both, every table judged once per family). Policies follow the stack: an IPv4
ipBlock becomes its twin (ipv6) or gains its twin as a second peer (dual-stack), so the same
table holds. A case marked `ip-blocks: as-written` keeps its ipBlocks literally, and its
`expect-ipv6` says what the IPv6 family sees instead: an ipBlock only ever admits its own family.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from labkit.k8s import Workloads, parse_manifests
from labkit.policy import NodePolicy, compile_node_policy

HERE = Path(__file__).resolve().parents[1] / "manifests" / "policy"
CLUSTER_FILE = HERE / "cluster.yaml"
CASES_FILE = HERE / "cases.yaml"
UPSTREAM_FILE = HERE / "upstream.yaml"
SERVICE = "svc"
V6_PREFIX = ipaddress.IPv6Network("fd00:64::/96")  # where the layout's IPv6 twins live
STACKS: dict[str, tuple[int, ...]] = {"ipv4": (4,), "dual-stack": (4, 6), "ipv6": (6,)}  # stack -> families


def twin(text: str) -> str:
    """The IPv6 twin of an IPv4 address or CIDR of the layout: the same bits, after V6_PREFIX."""
    net = ipaddress.IPv4Network(text)
    address = ipaddress.IPv6Address(int(V6_PREFIX.network_address) + int(net.network_address))
    return str(address) if "/" not in text else f"{address}/{96 + net.prefixlen}"


def of_family(text: str, family: int) -> str:
    """An IPv4 address or CIDR of the layout in `family`."""
    return text if family == 4 else twin(text)


@dataclass(frozen=True)
class Matrix:
    """Sources x destinations -> "." (allowed), "X" (blocked) or "-" (not checked)."""

    sources: tuple[str, ...]
    targets: tuple[str, ...]
    cells: Mapping[tuple[str, str], str] = field(repr=False)

    @classmethod
    def parse(cls, text: str) -> Matrix:
        lines = [line.split() for line in text.strip().splitlines() if line.strip()]
        targets = tuple(lines[0][1:])  # after the "from" corner
        cells = {}
        for row in lines[1:]:
            source, marks = row[0], row[1:]
            assert len(marks) == len(targets), f"row {source}: {len(marks)} marks for {len(targets)} columns"
            assert all(m in ".X-" for m in marks), f"row {source}: marks must be . X or -"
            cells.update({(source, t): m for t, m in zip(targets, marks, strict=True)})
        return cls(tuple(r[0] for r in lines[1:]), targets, cells)

    @classmethod
    def of(cls, like: Matrix, judge: Callable[[str, str], str]) -> Matrix:
        return cls(like.sources, like.targets,
                   {(s, t): "-" if like.cells[s, t] == "-" else judge(s, t)
                    for s in like.sources for t in like.targets})

    def render(self) -> str:
        width = max(len(s) for s in self.sources) + 2
        cols = {t: max(3, len(t)) for t in self.targets}
        head = f"{'from':<{width}}" + " ".join(f"{t:>{cols[t]}}" for t in self.targets)
        rows = [f"{s:<{width}}" + " ".join(f"{self.cells[s, t]:>{cols[t]}}" for t in self.targets)
                for s in self.sources]
        return "\n".join([head, *rows])

    def differences(self, other: Matrix) -> list[tuple[str, str]]:
        return [key for key, mark in self.cells.items() if mark != "-" and other.cells[key] != mark]


def explain(case: str, probe: str, expected: Matrix, observed: Matrix) -> str:
    wrong = ", ".join(f"{s}->{t}" for s, t in expected.differences(observed))
    return (f"case {case}, {probe}: {len(expected.differences(observed))} wrong ({wrong})\n"
            f"expected:\n{expected.render()}\nobserved:\n{observed.render()}")


@dataclass(frozen=True)
class Case:
    name: str
    policies: str = field(repr=False)
    expect: Mapping[str, Matrix] = field(repr=False)  # "tcp/80" -> matrix
    as_written: bool = False  # ipBlocks kept literally in every stack
    expect_ipv6: Mapping[str, Matrix] | None = field(default=None, repr=False)  # the IPv6 family's, if not `expect`

    def expected(self, family: int) -> Mapping[str, Matrix]:
        return self.expect_ipv6 if family == 6 and self.expect_ipv6 is not None else self.expect


def _matrices(tables: Mapping[str, str]) -> dict[str, Matrix]:
    return {probe: Matrix.parse(text) for probe, text in tables.items()}


def _load() -> tuple[dict, list[Case]]:
    data = yaml.safe_load(CASES_FILE.read_text())
    cases = []
    for c in data["cases"]:
        as_written = c.get("ip-blocks", "follow the stack") == "as-written"
        assert as_written == ("expect-ipv6" in c), f"case {c['name']}: ip-blocks: as-written goes with expect-ipv6"
        cases.append(Case(c["name"], c["policies"], _matrices(c["expect"]), as_written,
                          _matrices(c["expect-ipv6"]) if as_written else None))
    return data["layout"], cases


LAYOUT, CASES = _load()
POD_IPS: dict[str, str] = LAYOUT["pod_ips"]
NODES: dict[str, dict] = LAYOUT["nodes"]
PODS = tuple(POD_IPS)


# ---------------------------------------------------------------- the upstream e2e corpus (upstream.yaml)


def _peer_matches(peer: str, pod: str) -> bool:
    return peer == "*" or peer == pod or (peer.endswith("/*") and pod.split("/")[0] == peer[:-2])


def reachability(rules: list[list[str]]) -> Matrix:
    """Upstream's way of stating a truth table: every pod reaches every other, then each rule
    [FROM, TO, mark] in order; a pod to itself is not judged (upstream ignores loopback)."""
    cells = {(s, t): "-" if s == t else "." for s in PODS for t in PODS}
    for source, target, mark in rules:
        assert mark in (".", "X"), f"rule {source} -> {target}: mark {mark!r} must be . or X"
        for s, t in cells:
            if s != t and _peer_matches(source, s) and _peer_matches(target, t):
                cells[s, t] = mark
    return Matrix(PODS, PODS, cells)


@dataclass(frozen=True)
class Step:
    """One probe round of an upstream case: the policies in force, the labels added so far, the tables."""

    name: str                  # the case's name, and /N for a case of several steps
    upstream: str              # the upstream test's title
    policies: str = field(repr=False)
    relabel: Mapping[str, Mapping[str, str]] = field(repr=False)
    expect: Mapping[str, Matrix] = field(repr=False)


def _load_upstream() -> tuple[list[Step], list[dict], str]:
    data = yaml.safe_load(UPSTREAM_FILE.read_text())
    steps = []
    for case in data["cases"]:
        relabel: dict[str, dict[str, str]] = {}
        for n, step in enumerate(case["steps"], 1):
            for key, labels in (step.get("relabel") or {}).items():
                relabel[key] = {**relabel.get(key, {}), **labels}
            name = case["name"] if len(case["steps"]) == 1 else f"{case['name']}/{n}"
            steps.append(Step(name, case["upstream"], step["policies"], {k: dict(v) for k, v in relabel.items()},
                              {probe: reachability(rules) for probe, rules in step["expect"].items()}))
    return steps, data["sctp"]["cases"], data["sctp"]["reason"]


UPSTREAM, SCTP_CASES, SCTP_REASON = _load_upstream()


def policies_for(text: str, stack: str) -> str:
    """`text` with each IPv4 ipBlock as the stack has it: as written (ipv4), its twin (ipv6), or
    itself and its twin as two peers (dual-stack), so the case's tables hold in every stack."""
    if stack == "ipv4" or not text.strip():
        return text
    docs = [doc for doc in yaml.safe_load_all(text) if doc]
    for doc in docs:
        spec = doc.get("spec") or {}
        for rule in [*(spec.get("ingress") or []), *(spec.get("egress") or [])]:
            key = "from" if "from" in rule else "to"
            peers = []
            for peer in rule.get(key) or []:
                block = peer.get("ipBlock")
                if block is None or ":" in block["cidr"]:
                    peers.append(peer)
                    continue
                twin_block = {"cidr": twin(block["cidr"]), **({"except": [twin(e) for e in block["except"]]}
                                                              if "except" in block else {})}
                peers.extend([peer, {"ipBlock": twin_block}] if stack == "dual-stack" else [{"ipBlock": twin_block}])
            if rule.get(key):
                rule[key] = peers
    return yaml.safe_dump_all(docs, sort_keys=False)


def pod_ips(stack: str = "ipv4") -> dict[str, tuple[str, ...]]:
    """Every pod's addresses in the stack, IPv4 first in dual-stack."""
    return {pod: tuple(of_family(ip, f) for f in STACKS[stack]) for pod, ip in POD_IPS.items()}


def workloads(policies: str = "", relabel: Mapping[str, Mapping[str, str]] | None = None) -> Workloads:
    """The cluster with `policies`; `relabel` adds labels to namespaces (`ns/NAME`) and pods (`NS/POD`)."""
    text = CLUSTER_FILE.read_text()
    if relabel:
        docs = list(yaml.safe_load_all(text))
        keys = set()
        for doc in docs:
            meta = doc["metadata"]
            key = f"ns/{meta['name']}" if doc["kind"] == "Namespace" else f"{meta['namespace']}/{meta['name']}"
            keys.add(key)
            if key in relabel:
                meta["labels"] = {**meta.get("labels", {}), **relabel[key]}
        assert set(relabel) <= keys, f"relabel names what the cluster does not have: {set(relabel) - keys}"
        text = yaml.safe_dump_all(docs, sort_keys=False)
    return parse_manifests(text + ("\n---\n" + policies if policies else ""), "policy-case.yaml")


def pod_nodes(w: Workloads) -> dict[str, str]:
    return {pod.key: pod.spec.nodeName for pod in w.pods}


def node_ips(node: str, families: tuple[int, ...] = (4,)) -> list[str]:
    return [of_family(NODES[node][key], f) for f in families for key in ("gateway", "link_ip")]


def compile_all(w: Workloads, stack: str = "ipv4") -> dict[str, NodePolicy]:
    placement, ips = pod_nodes(w), pod_ips(stack)
    return {node: compile_node_policy(w, ips, node_name=node, pod_nodes=placement,
                                      node_ips=node_ips(node, STACKS[stack]))
            for node in NODES}


def case_workloads(case: Case, stack: str) -> Workloads:
    return workloads(case.policies if case.as_written else policies_for(case.policies, stack))


def predict(models: Mapping[str, NodePolicy], placement: Mapping[str, str], probe: str,
            source: str, target: str, family: int = 4) -> str:
    """What the compiled model says of one probe over `family`, as the two nodes would enforce it."""
    protocol, port_text = probe.split("/")
    port = int(port_text)

    def pod_ip(pod: str) -> str:
        return of_family(POD_IPS[pod], family)

    if target == SERVICE:
        target = LAYOUT["service"]["endpoint"]  # judged after DNAT
    if source == target:
        return "."  # loopback inside the pod
    if target in NODES:  # a node's own address: only the source pod's egress is judged
        if source in NODES:
            return "."
        gateway = of_family(NODES[target]["gateway"], family)
        ok = models[placement[source]].allows("egress", pod_ip(source), gateway, protocol, port)
        return "." if ok else "X"
    target_ip, target_node = pod_ip(target), placement[target]
    if source in NODES:
        if source == target_node:
            return "."
        source_ip = of_family(NODES[source]["link_ip"], family)
    else:
        source_ip = pod_ip(source)
        if not models[placement[source]].allows("egress", source_ip, target_ip, protocol, port):
            return "X"
    ok = models[target_node].allows("ingress", target_ip, source_ip, protocol, port)
    return "." if ok else "X"


def stack_cases(items: list, stacks: tuple[str, ...] = tuple(STACKS)) -> list:
    """(item, stack) for every item and stack: the parameters of a test run in every stack."""
    return [pytest.param(item, stack, id=f"{item.name}-{stack}") for item in items for stack in stacks]


def test_case_names_are_unique_and_enough():
    names = [c.name for c in CASES]
    assert len(set(names)) == len(names)
    assert len(CASES) >= 12


def test_matrix_round_trips():
    for case in CASES:
        for matrix in case.expect.values():
            assert Matrix.parse(matrix.render()) == matrix


@pytest.mark.parametrize(("case", "stack"), stack_cases(CASES))
def test_compiled_model_gives_the_truth_table(case: Case, stack: str):
    w = case_workloads(case, stack)
    models = compile_all(w, stack)
    placement = pod_nodes(w)
    for family in STACKS[stack]:
        for probe, expected in case.expected(family).items():
            observed = Matrix.of(expected, lambda s, t, probe=probe, family=family:
                                 predict(models, placement, probe, s, t, family))
            assert not expected.differences(observed), explain(f"{case.name} IPv{family}", probe, expected, observed)


def test_twins_and_stacked_policies():
    assert twin("10.244.1.10") == "fd00:64::af4:10a" and twin("10.244.0.0/16") == "fd00:64::af4:0/112"
    assert twin("0.0.0.0/4") == "fd00:64::/100"
    text = ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n"
            "spec:\n  podSelector: {}\n  ingress: [{from: [{podSelector: {}}, {ipBlock: {cidr: 10.244.0.0/16, "
            "except: [10.244.2.0/24]}}]}]\n  egress: [{ports: [{port: 53}]}]\n")
    dual = yaml.safe_load(policies_for(text, "dual-stack"))["spec"]
    assert dual["ingress"][0]["from"] == [
        {"podSelector": {}}, {"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.2.0/24"]}},
        {"ipBlock": {"cidr": "fd00:64::af4:0/112", "except": ["fd00:64::af4:200/120"]}}]
    assert dual["egress"] == [{"ports": [{"port": 53}]}]  # no peers stays no peers (everyone)
    only6 = yaml.safe_load(policies_for(text, "ipv6"))["spec"]["ingress"][0]["from"]
    assert [p.get("ipBlock", {}).get("cidr") for p in only6] == [None, "fd00:64::af4:0/112"]
    assert policies_for(text, "ipv4") == text
    # an IPv4 block in the IPv6 family admits nothing: the twin is what makes the tables agree
    case = next(c for c in CASES if c.name == "ip-block-with-except")
    literal = compile_all(workloads(case.policies), "dual-stack")
    assert literal["node1"].allows("ingress", POD_IPS["x/a"], POD_IPS["x/c"], "tcp", 80)
    assert not literal["node1"].allows("ingress", twin(POD_IPS["x/a"]), twin(POD_IPS["x/c"]), "tcp", 80)


# ---------------------------------------------------------------- the upstream corpus


def test_upstream_corpus_is_whole() -> None:
    """Every TCP and UDP case of the upstream suite, each probe a TCP or UDP port the pods serve;
    the SCTP group listed with its reason, not run."""
    names = {s.name.split("/")[0] for s in UPSTREAM}
    titles = {s.upstream for s in UPSTREAM}
    assert len(names) == len(titles) == 45 and len(UPSTREAM) == 55
    assert sum(t.startswith("using UDP: ") for t in titles) == 3
    probes = {p for s in UPSTREAM for p in s.expect}
    assert probes == {"tcp/80", "tcp/81", "udp/80", "udp/81"}
    assert [c["name"] for c in SCTP_CASES] == ["sctp-default-deny-ingress", "sctp-ports",
                                               "sctp-pod-in-another-namespace"]
    assert all(p.startswith("sctp/") for c in SCTP_CASES for p in c["expect"])
    assert "SCTP is not in this kernel" in SCTP_REASON


def test_reachability_rules_apply_in_order() -> None:
    m = reachability([["*", "x/*", "X"], ["*", "x/a", "."], ["x/b", "x/a", "X"]])
    assert m.cells["y/a", "x/b"] == "X" and m.cells["y/a", "x/a"] == "." and m.cells["x/b", "x/a"] == "X"
    assert m.cells["x/a", "x/a"] == "-" and m.cells["x/a", "y/a"] == "."


@pytest.mark.parametrize(("step", "stack"), stack_cases(UPSTREAM))
def test_compiled_model_gives_the_upstream_truth_table(step: Step, stack: str) -> None:
    w = workloads(policies_for(step.policies, stack), step.relabel)
    models = compile_all(w, stack)
    placement = pod_nodes(w)
    for family in STACKS[stack]:
        for probe, expected in step.expect.items():
            observed = Matrix.of(expected, lambda s, t, probe=probe, family=family:
                                 predict(models, placement, probe, s, t, family))
            assert not expected.differences(observed), explain(f"{step.name} IPv{family}", probe, expected, observed)


@pytest.mark.parametrize("case", SCTP_CASES, ids=lambda c: c["name"])
def test_sctp_cases_compile(case: dict) -> None:
    """Not run (no SCTP here), but their policies are valid and isolate the pods they select."""
    models = compile_all(workloads(case["policies"]))
    assert not models["node1"].allows("ingress", POD_IPS["x/a"], POD_IPS["z/a"], "tcp", 80)
