"""Run a labkit module in a lean interpreter: `python -I -S`, only the paths it needs on sys.path.

labkit starts Python helpers in its hot paths: the CNI plugin per pod and command, a
DNS server per kube-dns replica and a CNI server per lab during `up`, an agent per
source in `verify`. `site` (with an editable install's import finder) costs 15-60 ms
per start, and these helpers need only the standard library, labkit itself and at
most one named package, so they skip it. Imports os only: the CNI server loads this.
"""

from __future__ import annotations

import os
import sys

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bootstrap(module: str, extra_paths: tuple[str, ...] = ()) -> str:
    """Python source that puts labkit (and `extra_paths`) on sys.path and runs `module`.main()."""
    paths = [PACKAGE_PARENT, *extra_paths]
    return f"import sys; sys.path[:0] = {paths!r}; from {module} import main; sys.exit(main())"


def module_argv(module: str, *args: str, python: str | None = None,
                extra_paths: tuple[str, ...] = ()) -> list[str]:
    """argv running `module`.main() with `args` in sys.argv[1:], isolated and without `site`."""
    return [python or sys.executable, "-IS", "-c", bootstrap(module, extra_paths), *args]
