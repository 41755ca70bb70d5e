"""The shipped NetworkPolicy demo: its expect: truth table holds under both runtimes, live."""

from __future__ import annotations

import pytest

from labkit.lab import verify_lab
from labkit.verify import load_expects

from .conftest import RUNTIMES, TOPOLOGIES, start_lab, stop_lab

DEMO = TOPOLOGIES / "netpol-demo.yaml"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_netpol_demo_truth_table_holds(runtime: str) -> None:
    running = start_lab(DEMO, runtime=runtime)
    try:
        report = verify_lab(running.name, load_expects(DEMO))
        assert [r.line() for r in report.mismatches] == []
        assert len(report.results) == 16 and report.exit_code == 0
        table = running.exec("n1", "nft", "list", "table", "inet", "labkit-policy")
        assert table.returncode == 0 and "default-deny-ingress" in table.stdout
    finally:
        stop_lab(running)
