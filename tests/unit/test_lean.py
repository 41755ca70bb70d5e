"""labkit.lean: helpers started without `site` still find labkit and the one package they name."""

from __future__ import annotations

import os
import subprocess

from labkit.lean import PACKAGE_PARENT, module_argv


def test_a_lean_module_runs_with_its_arguments_and_without_site(tmp_path):
    pkg = tmp_path / "extra_pkg_for_lean"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("VALUE = 42\n")
    probe = tmp_path / "probe_mod.py"
    probe.write_text("import sys\n"
                     "def main():\n"
                     "    import extra_pkg_for_lean\n"
                     "    print(extra_pkg_for_lean.VALUE, 'site' in sys.modules, sys.flags.isolated, sys.argv[1:])\n"
                     "    return 3\n")
    argv = module_argv("probe_mod", "--flag", "x y", extra_paths=(str(tmp_path),))
    out = subprocess.run(argv, capture_output=True, text=True, env={"PYTHONPATH": "/nonexistent"})
    assert out.returncode == 3, out.stderr
    assert out.stdout.split(" ", 3) == ["42", "False", "1", "['--flag', 'x y']\n"]
    assert os.path.isdir(os.path.join(PACKAGE_PARENT, "labkit"))
