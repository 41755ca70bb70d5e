"""No test of the suite can be skipped: tests/conftest.py turns a skip into a failure."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def test_a_skip_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile("""
        import pytest

        def test_skips():
            pytest.skip("no engine")

        @pytest.mark.skipif(True, reason="not root")
        def test_marked():
            pass

        def test_runs():
            pass
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1, errors=1)  # a skip in setup (the marker) is an error
    for test, reason in (("test_skips", "no engine"), ("test_marked", "not root")):
        result.stdout.fnmatch_lines([f"*::{test} was skipped (Skipped: {reason}); labkit's tests fail instead*"])
