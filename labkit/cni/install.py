"""Install a lean `labkit-cni` launcher into a CNI bin dir.

The console script pip generates (`.venv/bin/labkit-cni`) starts Python with
`site`, and an editable install's import finder alone costs ~15 ms per exec.
A runtime execs the plugin once per pod and command, so labkit puts a launcher
into its CNI bin dir that starts the interpreter with `-I -S` (isolated, no
site) and puts only labkit's own parent directory on sys.path; the exec path
imports nothing but C-accelerated standard library modules after that.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PLUGIN = "labkit-cni"
PACKAGE_PARENT = Path(__file__).resolve().parents[2]

LAUNCHER = """#!{python} -IS
# labkit-cni launcher (written by labkit.cni.install): no `site`, fast exec per pod.
import sys
sys.path.insert(0, {root!r})
from labkit.cni.main import main
sys.exit(main())
"""


def launcher_text(python: str | None = None) -> str:
    return LAUNCHER.format(python=python or sys.executable, root=str(PACKAGE_PARENT))


def install_launcher(bin_dir: str | os.PathLike, *, python: str | None = None,
                     name: str = PLUGIN, compile_bytecode: bool = True) -> Path:
    """Write `<bin_dir>/<name>` atomically (mode 0755); return its path."""
    from labkit.files import write_atomic

    target = write_atomic(Path(bin_dir) / name, launcher_text(python), mode=0o755)
    if compile_bytecode:
        compile_exec_path()
    return target


def compile_exec_path() -> None:
    """Byte-compile the exec path (as a wheel install would); best effort."""
    import compileall

    try:
        compileall.compile_dir(str(Path(__file__).resolve().parent), quiet=2)
        compileall.compile_file(str(PACKAGE_PARENT / "labkit" / "__init__.py"), quiet=2)
    except OSError:
        pass
