"""Install the `labkit-cni` launcher into a CNI bin dir.

A runtime execs its plugins once per pod and command, so this path decides
labkit-cni's speed. The launcher (templates/cni-launcher.sh.j2) is a few lines
of sh: when a labkit CNI server (`labkit.cni.server`) listens on its socket,
the call goes there over socat and no Python starts; otherwise it starts the
interpreter with `-I -S` (isolated, no `site`: the console script pip generates
pays ~15 ms for an editable install's import finder alone) with only labkit's
parent directory on sys.path, and the exec path imports nothing but
C-accelerated standard library modules after that.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from labkit.lean import PACKAGE_PARENT, bootstrap

PLUGIN = "labkit-cni"
# the exec path's modules outside labkit/cni
EXEC_PATH_OUTSIDE = ("labkit/__init__.py", "labkit/net/__init__.py", "labkit/net/netlink.py")


def launcher_text(python: str | None = None, socket: str | os.PathLike | None = None) -> str:
    """The launcher script; `socket` is the CNI server it tries first ($LABKIT_CNI_SOCKET overrides)."""
    from labkit.templating import render

    return render("cni-launcher.sh.j2", python=shlex.quote(python or sys.executable),
                  socket=shlex.quote(str(socket)) if socket else "",
                  bootstrap=shlex.quote(bootstrap("labkit.cni.main")))


def install_launcher(bin_dir: str | os.PathLike, *, python: str | None = None,
                     socket: str | os.PathLike | None = None, name: str = PLUGIN,
                     compile_bytecode: bool = True) -> Path:
    """Write `<bin_dir>/<name>` atomically (mode 0755); return its path."""
    from labkit.files import write_atomic

    target = write_atomic(Path(bin_dir) / name, launcher_text(python, socket), mode=0o755)
    if compile_bytecode:
        compile_exec_path()
    return target


def compile_exec_path() -> None:
    """Byte-compile the exec path (as a wheel install would); best effort."""
    import compileall

    try:
        compileall.compile_dir(str(Path(__file__).resolve().parent), quiet=2)
        for module in EXEC_PATH_OUTSIDE:
            compileall.compile_file(os.path.join(PACKAGE_PARENT, module), quiet=2)
    except OSError:
        pass
