"""verify as a grader: `within:` and `--retry` rounds, exit codes 0/1/2, JUnit XML, the labs table.

The rounds run against a fake agent and a fake clock (labkit.verify's `time`), so no test waits.
"""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest

from labkit import cli, verify
from labkit.topology.expect import expect_problems, parse_expects
from labkit.verify import CannotCheck, Report

STATUS = {"name": "ws1", "nodes": [{"name": "cp", "netns": "lk-ws1-cp", "mgmt_ipv4": "172.31.0.2"}],
          "pods": [{"namespace": "default", "name": "client", "netns": "lk-ws1-p1", "ip": "10.244.0.5"}],
          "dns": {"ip": "10.96.0.10"}}


class FakeClock:
    """time.monotonic and time.sleep, where sleeping moves the clock and nothing waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.pauses: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(verify, "time", fake)
    return fake


def agent_opening_after(monkeypatch: pytest.MonkeyPatch, rounds: dict[int, int]) -> list[list[int]]:
    """A fake agent: check `i` is open from its `rounds[i]`-th probe on (never, when absent); returns
    the ids probed in each call."""
    calls: list[list[int]] = []
    seen: dict[int, int] = {}

    def run(netns_path: str, requests: list[dict], timeout: float) -> dict:
        calls.append([r["id"] for r in requests])
        out = {}
        for r in requests:
            seen[r["id"]] = seen.get(r["id"], 0) + 1
            is_open = r["id"] in rounds and seen[r["id"]] >= rounds[r["id"]]
            out[r["id"]] = {"id": r["id"], "open": is_open, "reason": "connected" if is_open else "refused"}
        return out

    monkeypatch.setattr(verify, "_run_agent", run)
    return calls


CHECKS = [
    {"from": "default/client", "to": "web:80", "result": "open", "within": 5},
    {"from": "default/client", "to": "db:5432", "result": "open"},
    {"from": "cp", "to": "default/client:80", "result": "closed"},
]


# ---------------------------------------------------------------- within and retry


def test_within_polls_a_missing_check_until_it_holds(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    calls = agent_opening_after(monkeypatch, {0: 3, 1: 1})
    report = verify.run_checks(STATUS, CHECKS)
    assert report.ok and report.exit_code == 0
    assert [r.attempts for r in report.results] == [3, 1, 1]
    assert calls[2:] == [[0], [0]]            # only the missing check goes again
    assert clock.pauses == [0.2, 0.4]         # growing pauses between rounds
    assert report.results[0].elapsed == pytest.approx(0.6)


def test_within_gives_up_when_its_time_is_over(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    agent_opening_after(monkeypatch, {1: 1})
    report = verify.run_checks(STATUS, CHECKS)
    assert not report.ok and report.exit_code == 1
    first = report.results[0]
    assert not first.ok and 1 + len(clock.pauses) == first.attempts
    assert clock.pauses == [0.2, 0.4, 0.8, 1.6, 2.0]   # the last round falls on the deadline, not past it
    assert first.elapsed == pytest.approx(5.0)


def test_without_within_or_retry_a_miss_is_probed_once(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    calls = agent_opening_after(monkeypatch, {0: 1, 1: 2})
    report = verify.run_checks(STATUS, CHECKS)
    assert [r.ok for r in report.results] == [True, False, True]
    assert report.results[1].attempts == 1 and clock.pauses == [] and len(calls) == 2  # one agent per source


def test_retry_gives_every_miss_more_rounds(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    agent_opening_after(monkeypatch, {0: 1, 1: 3})
    report = verify.run_checks(STATUS, CHECKS, retry=3)
    assert report.ok and report.results[1].attempts == 3       # met on its third probe: no fourth
    agent_opening_after(monkeypatch, {0: 1})
    report = verify.run_checks(STATUS, CHECKS, retry=2)
    assert report.results[1].attempts == 3 and not report.ok


def test_retry_reads_the_lab_again(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    agent_opening_after(monkeypatch, {0: 1, 1: 1})
    later = {**STATUS, "pods": [*STATUS["pods"], {"namespace": "default", "name": "new", "netns": "lk-ws1-p2",
                                                   "ip": "10.244.0.6"}]}
    checks = [{"from": "default/new", "to": "web:80", "result": "open"}]
    assert verify.run_checks(STATUS, checks).results[0].actual == "error"
    report = verify.run_checks(STATUS, checks, retry=1, refresh=lambda: later)
    assert report.ok and report.results[0].attempts == 2


@pytest.mark.parametrize("value, message", [
    (-1, "expect[0].within: expected seconds as a number 0-600 (how long the check may take to become true), "
         "got a number (-1)"),
    (601, "expect[0].within: expected seconds as a number 0-600 (how long the check may take to become true), "
          "got a number (601)"),
    ("5s", "expect[0].within: expected seconds as a number 0-600 (how long the check may take to become true), "
           "got a string ('5s')"),
    (True, "expect[0].within: expected seconds as a number 0-600 (how long the check may take to become true), "
           "got true (a boolean)"),
])
def test_bad_within(value: object, message: str) -> None:
    _, problems = expect_problems([{"from": "default/client", "to": "web:80", "result": "open", "within": value}])
    assert [str(p) for p in problems] == [message]


def test_within_is_seconds() -> None:
    (check,) = parse_expects([{"from": "default/client", "to": "web:80", "result": "open", "within": 2.5}])
    assert check.within == 2.5


def test_bad_retry() -> None:
    with pytest.raises(verify.LabkitError, match="retry must be a whole number of rounds"):
        verify.run_checks(STATUS, CHECKS, retry=-1)


# ---------------------------------------------------------------- exit codes


def _graded() -> list[Report]:
    checks = parse_expects([
        {"from": "default/client", "to": "web:80", "result": "open"},
        {"from": "default/client", "to": "db:5432", "result": "closed"},
        {"from": "default/nobody", "resolve": "web", "result": "10.96.0.0/16"},
    ])
    met = Report("ws-ann", [verify._judge(0, checks[0], {"open": True, "reason": "connected"})], 0.1,
                 source="/ws/ex1.yaml")
    missed = Report("ws-bob", [
        verify._judge(0, checks[0], {"open": False, "reason": "connection refused"}),
        verify._judge(1, checks[1], {"open": False, "reason": "timed out"}),
        verify.CheckResult(2, checks[2], "error", False, "lab 'ws-bob' has no pod 'default/nobody'"),
    ], 0.2)
    down = Report.cannot_check("ws-cy", "lab 'ws-cy' is not up (phase: down)")
    return [met, missed, down]


def test_exit_codes() -> None:
    met, missed, down = _graded()
    assert (met.exit_code, missed.exit_code, down.exit_code) == (0, 1, 2)
    assert not down.ok and CannotCheck("x").exit_code == 2
    for reports, code in (([met], 0), ([met, missed], 1), ([met, missed, down], 2), ([], 2)):
        assert verify.print_verify(reports, "table", file=io.StringIO()) == code


# ---------------------------------------------------------------- JUnit XML

SUITE_ATTRS = {"name", "tests", "failures", "errors", "skipped", "time", "timestamp", "hostname", "id", "package"}


def test_junit_shape() -> None:
    out = io.StringIO()
    assert verify.print_verify(_graded(), "junit", file=out) == 2
    text = out.getvalue()
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n')
    root = ET.fromstring(text)
    assert root.tag == "testsuites"
    assert {k: root.get(k) for k in ("tests", "failures", "errors")} == {"tests": "5", "failures": "1", "errors": "2"}
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["ws-ann", "ws-bob", "ws-cy"]
    for suite in suites:
        # the JUnit schema's attributes of a testsuite, and its counts agree with its testcases
        assert SUITE_ATTRS <= set(suite.attrib)
        cases = suite.findall("testcase")
        assert int(suite.get("tests")) == len(cases)
        assert int(suite.get("failures")) == sum(c.find("failure") is not None for c in cases)
        assert int(suite.get("errors")) == sum(c.find("error") is not None for c in cases)
        float(suite.get("time"))
        for case in cases:
            assert {"name", "classname", "time"} <= set(case.attrib)
            float(case.get("time"))
            for child in case:
                assert child.tag in ("failure", "error") and {"message", "type"} <= set(child.attrib)
    ann, bob, cy = suites
    assert ann.find("properties/property").attrib == {"name": "topology", "value": "/ws/ex1.yaml"}
    assert [c.get("name") for c in bob.findall("testcase")] == [
        "default/client -> web:80 open", "default/client -> db:5432 closed", "default/nobody resolve web 10.96.0.0/16"]
    failure = bob.find("testcase/failure")
    assert failure.get("message") == "expected open, got closed (connection refused)"
    assert failure.text.startswith("default/client -> web:80 expected open, got closed (connection refused)")
    assert bob.findall("testcase")[2].find("error").get("message").endswith("has no pod 'default/nobody')")
    (lab_up,) = cy.findall("testcase")
    assert lab_up.get("name") == "lab is up" and lab_up.find("error").get("type") == "CannotCheck"


# ---------------------------------------------------------------- the instructor's table


def test_labs_table() -> None:
    out = io.StringIO()
    verify.print_verify(_graded(), "table", file=out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["lab", "passed", "failed", "total", "not", "as", "expected"]
    assert lines[1].split() == ["ws-ann", "1", "0", "1"]
    assert lines[2].split()[:4] == ["ws-bob", "1", "2", "3"]
    assert "default/client -> web:80 expected open, got closed; default/client -> db:5432 expected closed, " \
           "got closed" not in lines[2]  # only the misses
    assert lines[2].endswith("default/client -> web:80 expected open, got closed; "
                             "default/nobody resolve web expected 10.96.0.0/16, got error")
    assert lines[3].split()[:4] == ["ws-cy", "-", "-", "-"] and "not checked: lab 'ws-cy' is not up" in lines[3]
    assert lines[4] == "1/3 labs meet every expectation; 1 not checked"


def test_json_of_several_labs() -> None:
    out = io.StringIO()
    verify.print_verify(_graded(), "json", file=out)
    data = json.loads(out.getvalue())
    assert [(d["lab"], d["exit_code"], d["error"]) for d in data] == [
        ("ws-ann", 0, None), ("ws-bob", 1, None), ("ws-cy", 2, "lab 'ws-cy' is not up (phase: down)")]


# ---------------------------------------------------------------- the command line


@pytest.fixture
def root(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(cli.os, "geteuid", lambda: 0)
    yield


def test_verify_needs_something_to_check(root: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["verify"]) == 2
    assert capsys.readouterr().err == ("error: name what to check: labkit verify TOPO, --name LAB (several times, "
                                       "or a glob) or --all\n")


@pytest.mark.parametrize("argv, message", [
    (["verify", "--retry", "-1", "t.yaml"], "argument --retry: '-1' is not a whole number of rounds 0-100"),
    (["verify", "--name", "../x"], "--name: '../x' is not a lab name"),
])
def test_verify_bad_options(root: None, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) if argv[1] == "--retry" else _no_raise():
        code = cli.main(argv)
        assert code == 2
    assert message in capsys.readouterr().err


class _no_raise:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False
