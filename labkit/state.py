"""Lab state on disk: written first thing in `up`, so `down --name` works even after a crash.

It lives under /run (a tmpfs), like the namespaces it describes: a reboot
removes both together.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from labkit.files import write_atomic

STATE_ROOT = os.environ.get("LABKIT_STATE_DIR", "/run/labkit")


def lab_dir(lab: str) -> str:
    return os.path.join(STATE_ROOT, lab)


def write(lab: str, state: dict[str, Any]) -> None:
    """Replace the lab's state atomically (temp file + rename)."""
    write_atomic(os.path.join(lab_dir(lab), "state.json"), json.dumps(state, indent=2, sort_keys=True))


def read(lab: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(lab_dir(lab), "state.json"), encoding="utf-8") as fh:
            return json.load(fh)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def remove(lab: str) -> None:
    shutil.rmtree(lab_dir(lab), ignore_errors=True)


def labs() -> set[str]:
    try:
        return {n for n in os.listdir(STATE_ROOT) if os.path.isdir(os.path.join(STATE_ROOT, n))}
    except FileNotFoundError:
        return set()
