"""Golden-file tests: every broken topology in tests/topologies/bad/ gets exactly the message beside it.

Each `bad/<case>.yaml` has a `bad/<case>.txt` holding the message `labkit validate` prints on
stderr after `error: `, as printed when run from the repo root with the relative path.

To regenerate the golden files after a deliberate change of wording, run

    LABKIT_REGOLD=1 .venv/bin/pytest -q tests/unit/test_topology_golden.py

then read `git diff tests/topologies/bad/` line by line: every message must still name the
file, the line, the field and what would be valid. A case whose .txt is missing is written
on the first regold run; with LABKIT_REGOLD unset a missing .txt fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BAD = Path("tests/topologies/bad")  # relative: messages name the file as the user typed it
REGOLD = os.environ.get("LABKIT_REGOLD") == "1"
CASES = sorted(p.stem for p in (ROOT / BAD).glob("*.yaml"))


def _lk_netns() -> set[str]:
    try:
        return {n for n in os.listdir("/run/netns") if n.startswith("lk-")}
    except FileNotFoundError:
        return set()


def _lab_name(case: str) -> str | None:
    match = re.search(r"^name:\s*\"?([A-Za-z0-9_-]+)", (ROOT / BAD / f"{case}.yaml").read_text(), re.M)
    return match.group(1) if match else None


def _validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "labkit.cli", "validate", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )


@pytest.fixture(scope="module")
def runs() -> dict[str, tuple[subprocess.CompletedProcess, set[str]]]:
    """Every case validated once, in parallel (one interpreter start each is most of the cost).

    Beside each result: the lk- namespaces that appeared while the whole batch ran.
    """
    before = _lk_netns()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = dict(zip(CASES, pool.map(lambda case: _validate(BAD / f"{case}.yaml"), CASES), strict=True))
    appeared = _lk_netns() - before
    return {case: (result, appeared) for case, result in results.items()}


def test_enough_cases() -> None:
    assert len(CASES) >= 30


def test_every_yaml_has_its_txt_and_every_txt_its_yaml() -> None:
    yamls = {p.stem for p in (ROOT / BAD).glob("*.yaml")}
    txts = {p.stem for p in (ROOT / BAD).glob("*.txt")}
    if not REGOLD:
        assert yamls - txts == set(), "bad topologies without a golden .txt (run with LABKIT_REGOLD=1)"
    assert txts - yamls == set(), "golden .txt files whose .yaml is gone"
    assert not [p.name for p in (ROOT / BAD).iterdir() if p.suffix not in (".yaml", ".txt")]


@pytest.mark.parametrize("case", CASES)
def test_bad_topology_message(case: str, runs: dict) -> None:
    path = BAD / f"{case}.yaml"
    golden = ROOT / BAD / f"{case}.txt"
    result, appeared = runs[case]

    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.startswith("error: "), result.stderr
    message = result.stderr.removeprefix("error: ")
    if REGOLD:
        golden.write_text(message, encoding="utf-8")
    assert message == golden.read_text(encoding="utf-8")
    # every line of it names the file, then a line number
    assert all(re.match(rf"{re.escape(str(path))}:\d+: ", line) for line in message.splitlines()), message

    # validate builds nothing: no namespace of this lab appeared. Only this lab's prefix is
    # looked at, because integration tests running beside this suite bring their own labs up.
    # A file naming no lab could only yield a nameless prefix ("lk-." or "lk-None.").
    lab = _lab_name(case)
    prefixes = (f"lk-{lab}.",) if lab is not None else ("lk-.", "lk-None.")
    assert {n for n in appeared if n.startswith(prefixes)} == set()
