"""labkit loads pyroute2's message classes without pyroute2's whole __init__, and pyroute2 still
works as ever for whoever uses it afterwards (labkit itself, or a test suite using the plugin)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import labkit.net.netlink
assert "pyroute2.ndb.main" not in sys.modules and "pyroute2.iproute" not in sys.modules, "full init ran"
from pyroute2 import config  # a submodule: must not run the package's __init__ either
assert "pyroute2.ndb.main" not in sys.modules
import pyroute2
from pyroute2 import IPRoute, NDB  # the package's own names: its __init__ runs now
from pyroute2.iproute import IPRoute as direct
assert IPRoute is direct and pyroute2.__version__ and "pyroute2.ndb.main" in sys.modules
import pyroute2.netlink.rtnl.ifinfmsg as m
assert m.ifinfmsg is labkit.net.netlink.ifinfmsg
print("ok")
"""

ALREADY = """
import pyroute2, sys
before = sys.modules["pyroute2"]
import labkit.net.netlink
assert sys.modules["pyroute2"] is before and "__getattr__" not in before.__dict__
print("ok")
"""


def test_message_classes_only_then_the_whole_package_on_first_use():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_a_pyroute2_imported_before_labkit_is_left_alone():
    out = subprocess.run([sys.executable, "-c", ALREADY], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
