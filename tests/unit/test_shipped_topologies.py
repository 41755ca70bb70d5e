"""Every shipped topology is brought up by the suite (DESIGN.md section 6): each file in topologies/
is named by some integration test, so a new lab cannot ship without one."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "topologies").glob("*.yaml"))
INTEGRATION = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests" / "integration").glob("*.py"))


def test_there_are_shipped_topologies() -> None:
    assert len(SHIPPED) >= 10


@pytest.mark.parametrize("topology", SHIPPED, ids=lambda p: p.name)
def test_each_shipped_topology_has_an_integration_test(topology: Path) -> None:
    assert topology.name in INTEGRATION, f"no integration test names topologies/{topology.name}"
