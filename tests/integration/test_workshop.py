"""The workshop exercises of topologies/workshop, graded by `labkit verify`.

Each exercise is brought up once from its starting topology, whose `expect:` must fail (exit code
1, and the checks that fail are the ones the task is about); its solution's workloads are then
applied to the same lab (`labkit apply solutions/EX.yaml --name LAB`, as an attendee would after
editing) and every check must pass (exit code 0). The grader's own faces are tested on the way:
JUnit XML, exit code 2 for a lab that is not up, and the instructor's table over several labs.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from labkit import cli, lab, verify
from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration

WORKSHOP = ROOT / "topologies" / "workshop"
EXERCISES = sorted(p.stem for p in WORKSHOP.glob("*.yaml"))

# what fails in each starting state, by check index: the checks the task is about
FAILING = {
    "01-localhost": [0],
    "02-pod-to-pod": [1],
    "03-no-endpoints": [1],
    "04-dns": [0, 1],
    "05-nodeport": [0, 1],
    "06-network-policy": [1, 2],
    "07-egress": [0, 1],
}


def test_every_exercise_has_a_solution_a_task_and_the_same_lab() -> None:
    assert EXERCISES == sorted(FAILING)
    readme = (WORKSHOP / "README.md").read_text()
    for ex in EXERCISES:
        start = yaml.safe_load((WORKSHOP / f"{ex}.yaml").read_text())
        solution = yaml.safe_load((WORKSHOP / "solutions" / f"{ex}.yaml").read_text())
        # the solution differs only in its workloads: apply can take the lab from one to the other
        assert {k: v for k, v in start.items() if k != "workloads"} == \
               {k: v for k, v in solution.items() if k != "workloads"}
        assert start["workloads"] == solution["workloads"] == [f"{ex}/workloads.yaml"]
        assert (WORKSHOP / ex / "workloads.yaml").read_text() != \
               (WORKSHOP / "solutions" / ex / "workloads.yaml").read_text()
        assert f"## {ex}" in readme


@pytest.mark.parametrize("exercise", EXERCISES)
def test_start_fails_and_the_solution_passes(labkit_lab_factory, exercise: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    running = labkit_lab_factory(WORKSHOP / f"{exercise}.yaml")
    start = lab.verify_topology(str(WORKSHOP / f"{exercise}.yaml"), name=running.name)
    assert start.exit_code == 1, start.text()
    assert [r.index for r in start.mismatches] == FAILING[exercise], start.text()
    lab.apply(str(WORKSHOP / "solutions" / f"{exercise}.yaml"), name=running.name)
    # the lab records the file it was last brought up or applied from: --name alone grades against it
    code = cli.main(["verify", "--name", running.name, "--format", "junit"])
    out = capsys.readouterr().out
    assert code == 0, out
    suite = ET.fromstring(out).find("testsuite")
    assert suite.get("name") == running.name and suite.get("failures") == suite.get("errors") == "0"
    assert int(suite.get("tests")) == len(start.results)
    assert suite.find("properties/property").get("value") == str(WORKSHOP / "solutions" / f"{exercise}.yaml")


def test_instructor_view(labkit_lab_factory, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Two attendees on exercise 03, one solved: one table, exit 1; a lab that is not up: exit 2."""
    path = WORKSHOP / "03-no-endpoints.yaml"
    ann = labkit_lab_factory(path)
    bob = labkit_lab_factory(path)
    lab.apply(str(WORKSHOP / "solutions" / "03-no-endpoints.yaml"), name=ann.name)
    prefix = ann.name.rsplit("-", 1)[0]
    assert bob.name.startswith(prefix + "-")

    code = cli.main(["verify", "--name", f"{prefix}-*"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert set(rows) >= {ann.name, bob.name}
    assert rows[ann.name].split()[1:4] == ["2", "0", "2"]
    assert rows[bob.name].split()[1:4] == ["1", "1", "2"]
    assert rows[bob.name].endswith("default/client -> web.default:80 expected open, got closed")

    report = tmp_path / "grades.xml"
    code = cli.main(["verify", "--name", ann.name, "--name", bob.name, "--name", "nosuchlab", "--format", "junit",
                     "--retry", "1", "-o", str(report)])
    assert code == 2 and capsys.readouterr().out == f"wrote {report}\n"
    suites = {s.get("name"): s for s in ET.parse(report).getroot().findall("testsuite")}
    assert list(suites) == [ann.name, bob.name, "nosuchlab"]
    assert suites["nosuchlab"].find("testcase/error").get("message").startswith("no lab named 'nosuchlab' is up")
    assert suites[bob.name].get("failures") == "1"
    assert "attempts: 2" in suites[bob.name].find("testcase/failure").text  # --retry 1: probed twice

    # one lab not up, named alone: exit 2 too, with one line saying why
    assert cli.main(["verify", "--name", "nosuchlab"]) == 2
    assert capsys.readouterr().out.startswith("lab nosuchlab: not checked: no lab named 'nosuchlab' is up")
    # the topology's own expect: invalid: exit 2 before any probe
    bad = tmp_path / "bad.yaml"
    bad.write_text(path.read_text().replace("result: open", "result: opened", 1))
    assert cli.main(["verify", str(bad), "--name", ann.name]) == 2
    assert "bad.yaml:17: expect[1].result: 'opened' is not valid" in capsys.readouterr().err


def test_report_shapes_of_a_real_lab_are_json(labkit_lab_factory) -> None:
    """verify_labs with the topology given: every lab against that file's checks."""
    path = WORKSHOP / "03-no-endpoints.yaml"
    running = labkit_lab_factory(path)
    (report,) = lab.verify_labs([running.name], str(path))
    assert report.source == str(path) and report.exit_code == 1
    out = io.StringIO()
    assert verify.print_verify([report], "json", file=out) == 1
