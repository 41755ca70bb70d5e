"""The shipped NetworkPolicy demo: its expect: truth table holds under both runtimes, live."""

from __future__ import annotations

from labkit.lab import verify_lab
from labkit.pytest_plugin import RunningLab, labkit_fixture
from labkit.verify import load_expects

from .conftest import RUNTIMES, TOPOLOGIES

DEMO = TOPOLOGIES / "netpol-demo.yaml"

demo = labkit_fixture(DEMO, runtime=RUNTIMES)


def test_netpol_demo_truth_table_holds(demo: RunningLab) -> None:
    report = verify_lab(demo.name, load_expects(DEMO))
    assert [r.line() for r in report.mismatches] == []
    assert len(report.results) == 16 and report.exit_code == 0
    table = demo.exec("n1", "nft", "list", "table", "inet", "labkit-policy")
    assert table.returncode == 0 and "default-deny-ingress" in table.stdout
