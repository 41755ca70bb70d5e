"""The suite's one rule about outcomes: no test of labkit is ever skipped.

A missing tool, engine or privilege fails the test that needs it, naming what is missing; a
skip (from pytest.skip, a skipif/skip marker or importorskip, here or in a library) is turned
into a failure, so that CI cannot go green without running everything.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"{item.nodeid} was skipped ({reason}); labkit's tests fail instead of skipping"


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen]:
    """An unrelated process (root's, in the suite) that labkit must never signal or enter."""
    proc = subprocess.Popen(["sleep", "600"])
    yield proc
    proc.kill()
    proc.wait()
