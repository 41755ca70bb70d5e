"""Import pyroute2's message classes without the rest of pyroute2.

pyroute2's package `__init__` imports all of pyroute2 (NDB, IPDB, ipset, nl80211,
plan9, ...): ~200 ms, a fifth of a `labkit up` typed at the shell. labkit needs
its rtnetlink message classes. So, unless pyroute2 is already imported, the
package is registered without running its `__init__`; that runs, in the same
module object, on the first use of any attribute of the package itself, so
`from pyroute2 import IPRoute` works as ever, here and in the user's code.
"""

from __future__ import annotations

import importlib.util
import sys
import threading

_lock = threading.Lock()


def defer_package_init() -> None:
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None:
        return  # not installed: the import that follows fails with Python's own message
    package = importlib.util.module_from_spec(spec)  # has __path__: submodules import normally

    def run_init_on_first_use(name: str):
        if importlib.util.find_spec(f"pyroute2.{name}") is not None:
            # `from pyroute2 import config` (pyroute2 does this itself): a submodule, which the import
            # system loads when the attribute is missing; running __init__ here would be circular
            raise AttributeError(name)
        with _lock:
            if package.__dict__.pop("__getattr__", None) is not None:
                spec.loader.exec_module(package)
        return getattr(package, name)

    package.__getattr__ = run_init_on_first_use
    sys.modules["pyroute2"] = package
