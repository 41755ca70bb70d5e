"""The NetworkPolicy truth tables of tests/manifests/policy, checked on the compiled model (no root).

The integration suite (tests/integration/test_policy_matrix.py) probes the same tables on real
namespaces; this module owns the case files and their matrix format, and evaluates each case the
way the nodes do: egress on the source pod's node, ingress on the destination pod's node, after
DNAT, with the own node and loopback always allowed.
"""

from __future__ import annotations

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


def _load() -> tuple[dict, list[Case]]:
    data = yaml.safe_load(CASES_FILE.read_text())
    cases = [Case(c["name"], c["policies"], {probe: Matrix.parse(text) for probe, text in c["expect"].items()})
             for c in data["cases"]]
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


def node_ips(node: str) -> list[str]:
    return [NODES[node]["gateway"], NODES[node]["link_ip"]]


def compile_all(w: Workloads) -> dict[str, NodePolicy]:
    placement = pod_nodes(w)
    return {node: compile_node_policy(w, POD_IPS, node_name=node, pod_nodes=placement, node_ips=node_ips(node))
            for node in NODES}


def predict(models: Mapping[str, NodePolicy], placement: Mapping[str, str], probe: str,
            source: str, target: str) -> str:
    """What the compiled model says of one probe, as the two nodes would enforce it."""
    protocol, port_text = probe.split("/")
    port = int(port_text)
    if target == SERVICE:
        target = LAYOUT["service"]["endpoint"]  # judged after DNAT
    if source == target:
        return "."  # loopback inside the pod
    if target in NODES:  # a node's own address: only the source pod's egress is judged
        if source in NODES:
            return "."
        ok = models[placement[source]].allows("egress", POD_IPS[source], NODES[target]["gateway"], protocol, port)
        return "." if ok else "X"
    target_ip, target_node = POD_IPS[target], placement[target]
    if source in NODES:
        if source == target_node:
            return "."
        source_ip = NODES[source]["link_ip"]
    else:
        source_ip = POD_IPS[source]
        if not models[placement[source]].allows("egress", source_ip, target_ip, protocol, port):
            return "X"
    ok = models[target_node].allows("ingress", target_ip, source_ip, protocol, port)
    return "." if ok else "X"


def test_case_names_are_unique_and_enough():
    names = [c.name for c in CASES]
    assert len(set(names)) == len(names)
    assert len(CASES) >= 12


def test_matrix_round_trips():
    for case in CASES:
        for matrix in case.expect.values():
            assert Matrix.parse(matrix.render()) == matrix


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_compiled_model_gives_the_truth_table(case: Case):
    w = workloads(case.policies)
    models = compile_all(w)
    placement = pod_nodes(w)
    for probe, expected in case.expect.items():
        observed = Matrix.of(expected, lambda s, t, probe=probe: predict(models, placement, probe, s, t))
        assert not expected.differences(observed), explain(case.name, probe, expected, observed)


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


@pytest.mark.parametrize("step", UPSTREAM, ids=lambda s: s.name)
def test_compiled_model_gives_the_upstream_truth_table(step: Step) -> None:
    w = workloads(step.policies, step.relabel)
    models = compile_all(w)
    placement = pod_nodes(w)
    for probe, expected in step.expect.items():
        observed = Matrix.of(expected, lambda s, t, probe=probe: predict(models, placement, probe, s, t))
        assert not expected.differences(observed), explain(step.name, probe, expected, observed)


@pytest.mark.parametrize("case", SCTP_CASES, ids=lambda c: c["name"])
def test_sctp_cases_compile(case: dict) -> None:
    """Not run (no SCTP here), but their policies are valid and isolate the pods they select."""
    models = compile_all(workloads(case["policies"]))
    assert not models["node1"].allows("ingress", POD_IPS["x/a"], POD_IPS["z/a"], "tcp", 80)
