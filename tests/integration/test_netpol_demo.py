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


def test_a_trace_of_a_dropped_packet_names_the_policy_and_leaves_nothing(demo: RunningLab) -> None:
    from labkit.lab import trace

    report = trace(demo.name, "z/a", "x/a:80")  # z is not y: x/a's ingress drops it (see the truth table)
    assert report["result"]["open"] is False and report["reply"] == []
    x_a = demo.pods()["x/a"]
    dropped = report["dropped"]
    assert dropped is not None and dropped["where"] == x_a["node"], report
    assert "NetworkPolicy" in dropped["by"] and "x/default-deny-ingress" in dropped["by"], dropped
    assert "(ingress of x/a)" in dropped["by"], dropped
    assert [h["name"] for h in report["probe"]] == ["z/a", x_a["node"]]  # never reached x/a
    assert report["probe"][-1]["outcome"] == "dropped"
    allowed = trace(demo.name, "y/a", "x/a:80")  # and the policy that lets y in is named too
    assert allowed["result"]["open"] and allowed["dropped"] is None
    assert any("allowed by NetworkPolicy x/a-from-namespace-y" in (r["meaning"] or "")
               for h in allowed["probe"] for r in h["rules"]), allowed["probe"]
    for node in demo.nodes():
        assert "labkit-trace" not in demo.exec(node, "nft", "list", "tables").stdout
