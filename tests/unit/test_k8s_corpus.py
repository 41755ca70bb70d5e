"""The kubectl-style corpus (tests/manifests/kubectl): every file loads, with the outcome its
`# expect ...` lines state: the pods each controller makes (and where), the objects and fields
accepted but not acted on. The same lab is brought up by tests/integration/test_manifests_corpus.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from labkit.topology import load_plan
from labkit.topology.workloads import not_acted_on, plan_notes

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "manifests" / "kubectl"
LAB = CORPUS / "lab.yaml"


def expectations(prefix: str) -> list[tuple[str, str]]:
    found = []
    for path in sorted(CORPUS.glob("*.yaml")):
        for line in path.read_text().splitlines():
            if line.startswith(f"# expect {prefix}: "):
                found.append((path.name, line.removeprefix(f"# expect {prefix}: ")))
    return found


@pytest.fixture(scope="module")
def plan():
    return load_plan(str(LAB))


def test_every_corpus_file_is_in_the_lab():
    listed = set(re.findall(r"^  - (\S+\.yaml)$", LAB.read_text(), re.M))
    assert listed == {p.name for p in CORPUS.glob("*.yaml")} - {"lab.yaml"}


@pytest.mark.parametrize(("file", "line"), expectations("pods"), ids=lambda v: v)
def test_pods(plan, file, line):
    owner, _, rest = line.partition("=")
    count, _, nodes = rest.partition(" on ")
    kind, name = owner.split("/")
    workloads = plan.workloads
    if kind == "Pod":
        pods = [p for p in workloads.pods if p.name == name and p.key not in workloads.owners]
    else:
        pods = [p for p in workloads.pods if workloads.owners.get(p.key) == owner]
    assert len(pods) == int(count), file
    if nodes:
        assert sorted(plan.allocation.placement[p.key] for p in pods) == nodes.split(",")


@pytest.mark.parametrize(("file", "line"), expectations("not acted on"), ids=lambda v: v)
def test_objects_not_acted_on(plan, file, line):
    assert line in not_acted_on(plan)["objects"]


@pytest.mark.parametrize(("file", "line"), expectations("field not acted on"), ids=lambda v: v)
def test_fields_not_acted_on(plan, file, line):
    assert line in not_acted_on(plan)["fields"]


def test_kubectl_create_service_port_name(plan):
    (web,) = [s for s in plan.workloads.services if s.name == "web"]
    assert [(p.name, p.port, p.target) for p in web.spec.ports] == [("8001-8000", 8001, 8000)]


def test_kubectl_noise_is_not_noted(plan):
    """creationTimestamp: null, status: {}, resources: {}, strategy: {} make no note."""
    notes = "\n".join(plan_notes(plan))
    assert "creationTimestamp" not in notes and "status" not in notes and "strategy" not in notes
    assert "field not acted on: Deployment" not in notes and "field not acted on: Job" not in notes


def test_validate_prints_the_notes():
    run = subprocess.run([sys.executable, "-m", "labkit.cli", "validate", str(LAB)], capture_output=True,
                         text=True, cwd=ROOT, check=False)
    assert run.returncode == 0, run.stderr
    assert "note: not acted on: ConfigMap default/cfg (" in run.stdout
    assert "note: field not acted on: Pod spec.resources (" in run.stdout


def test_job_and_daemon_set_pods_are_labelled_as_their_controllers_label_them(plan):
    workloads = plan.workloads
    (job_pod,) = [p for p in workloads.pods if workloads.owners.get(p.key) == "Job/once"]
    assert job_pod.labels["batch.kubernetes.io/job-name"] == "once" and job_pod.labels["job-name"] == "once"
    assert re.fullmatch(r"once-[bcdfghjklmnpqrstvwxz2456789]{5}", job_pod.name)
    agents = [p for p in workloads.pods if workloads.owners.get(p.key) == "DaemonSet/agent"]
    assert {p.spec.nodeName for p in agents} == {"cp", "w1", "w2"}
    assert all(p.namespace == "kube-system" and "controller-revision-hash" in p.labels for p in agents)
