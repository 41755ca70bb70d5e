"""The layers of DESIGN.md section 2 hold: `lint-imports` passes, and one import across a layer fails it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = os.path.join(os.path.dirname(sys.executable), "lint-imports")


def _lint(project: Path) -> subprocess.CompletedProcess:
    # PYTHONPATH first: in a copy, `labkit` is the copy, not the editable install
    return subprocess.run([LINT_IMPORTS, "--no-cache", "--no-logo"], cwd=project, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(project)})


def test_the_contracts_hold() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def copy_of_labkit(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "labkit", tmp_path / "labkit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


@pytest.mark.parametrize(("module", "forbidden"), [
    ("labkit/net/__init__.py", "labkit.runtime"),  # a primitive reaching up to a component
    ("labkit/topology/schema.py", "labkit.net"),  # the plan reaching into the kernel
    ("labkit/proxy/__init__.py", "labkit.dns"),  # one component into another
])
def test_one_import_across_a_layer_fails_even_inside_a_function(copy_of_labkit: Path, module: str,
                                                                 forbidden: str) -> None:
    path = copy_of_labkit / module
    path.write_text(path.read_text() + f"\n\ndef _crossing():\n    import {forbidden}\n")
    result = _lint(copy_of_labkit)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BROKEN" in result.stdout and forbidden in result.stdout


def test_a_new_top_level_module_must_be_placed_in_a_layer(copy_of_labkit: Path) -> None:
    (copy_of_labkit / "labkit" / "stray.py").write_text('"""Not in any layer."""\n')
    result = _lint(copy_of_labkit)
    assert result.returncode != 0 and "labkit.stray" in result.stdout + result.stderr
