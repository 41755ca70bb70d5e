"""Lab state on disk: written first thing in `up`, so `down --name` works even after a crash.

It lives in the lab's folder under the state root (labkit.paths), like the
namespaces it describes on a tmpfs: a reboot removes both together.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

from labkit import paths
from labkit.files import write_atomic


def lab_dir(lab: str) -> str:
    return paths.lab_dir(lab)


def write(lab: str, state: dict[str, Any]) -> None:
    """Replace the lab's state atomically (temp file + rename)."""
    write_atomic(paths.lab(lab).state_file, json.dumps(state, indent=2, sort_keys=True))


def read(lab: str) -> dict[str, Any] | None:
    """The lab's state; None if there is none, or it is not a JSON object (a damaged file is
    treated as no file: `down` then works from what exists)."""
    try:
        with open(paths.lab(lab).state_file, encoding="utf-8") as fh:
            data = json.load(fh)
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def remove(lab: str) -> None:
    shutil.rmtree(paths.lab_dir(lab), ignore_errors=True)


def labs() -> set[str]:
    return paths.lab_names()
