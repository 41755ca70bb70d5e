"""Asking a running BIRD what it knows, through `birdc -s SOCKET`, and reading its answers.

The parsers are pure functions of birdc's text (tests/unit/test_bgp_birdc.py holds real samples):

    parse_protocols(text) -> [{name, proto, table, state, since, info}]   # `show protocols`
    parse_routes(text)    -> [{prefix, family, table, type, protocol, primary, preference, via, dev}]   # `show route`

`show route` answers from every table: `master4` (IPv4) and, in a dual-stack lab, `master6` (IPv6).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from typing import Any

from labkit.errors import LabkitError

BIRDC = "birdc"
TIMEOUT = 5.0
OUTPUT_MAX = 4 * 1024 * 1024  # a lab's tables are small; never read without bound


class BirdcError(LabkitError):
    """birdc could not ask the daemon (no socket, no daemon, a refused command)."""


def ask(socket: str, *command: str, timeout: float = TIMEOUT) -> str:
    """birdc's answer to `command` (e.g. "show", "route"), without the `BIRD x.y ready.` banner."""
    try:
        proc = subprocess.run([BIRDC, "-s", socket, *command], capture_output=True, text=True, timeout=timeout,
                              check=False, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise BirdcError("birdc is not installed (Debian: apt-get install bird2)") from None
    except subprocess.TimeoutExpired:
        raise BirdcError(f"birdc -s {socket} {' '.join(command)}: no answer within {timeout:.0f} s") from None
    text = (proc.stdout or "")[:OUTPUT_MAX]
    if proc.returncode != 0 or text.startswith("Unable to connect"):
        raise BirdcError(f"birdc -s {socket}: {(text + proc.stderr).strip() or f'exit {proc.returncode}'}")
    return _without_banner(text)


def _without_banner(text: str) -> str:
    lines = text.splitlines()
    if lines and lines[0].startswith("BIRD ") and lines[0].rstrip().endswith("ready."):
        lines = lines[1:]
    return "\n".join(lines)


def show_status(socket: str) -> str:
    return ask(socket, "show", "status")


_SINCE = r"(?:\d{4}-\d\d-\d\d(?: \d\d:\d\d:\d\d(?:\.\d+)?)?|\d\d:\d\d:\d\d(?:\.\d+)?)"
_PROTOCOL = re.compile(rf"^(?P<name>\S+)\s+(?P<proto>\S+)\s+(?P<table>\S+)\s+(?P<state>\S+)\s+"
                       rf"(?P<since>{_SINCE})(?:\s+(?P<info>.*))?$")


def parse_protocols(text: str) -> list[dict[str, str]]:
    """`show protocols`: one dict per protocol row (the header and banner skipped)."""
    rows = []
    for line in _without_banner(text).splitlines():
        match = _PROTOCOL.match(line.rstrip())
        if match is None or match["name"] == "Name":
            continue
        rows.append({k: (match[k] or "").strip() for k in ("name", "proto", "table", "state", "since", "info")})
    return rows


def sessions(text: str) -> list[dict[str, str]]:
    """The BGP rows of `show protocols` as sessions: {name, state (BGP's: Established, Active, ...),
    up (BIRD's protocol state), since, info (the rest: the last error)}."""
    found = []
    for row in parse_protocols(text):
        if row["proto"] != "BGP":
            continue
        bgp_state, _, rest = row["info"].partition(" ")
        found.append({"name": row["name"], "state": bgp_state or row["state"], "protocol_state": row["state"],
                      "since": row["since"], "info": rest.strip()})
    return found


_ROUTE = re.compile(r"^(?P<prefix>\S+)?\s+(?P<type>[a-z]+)\s+\[(?P<protocol>\S+)(?: [^\]]*)?\]"
                    r"(?P<primary> \*)?(?: \((?P<preference>\d+)(?:/[^)]*)?\))?(?: \[(?P<origin>[^\]]*)\])?")
_VIA = re.compile(r"^\s+via (?P<via>\S+) on (?P<dev>\S+)")
_DEV = re.compile(r"^\s+dev (?P<dev>\S+)")


def parse_routes(text: str) -> list[dict[str, Any]]:
    """`show route` (one table or several): one dict per route, a prefix's alternatives included;
    `family` (4 or 6) from the prefix, `table` from birdc's `Table NAME:` heading (None without one)."""
    routes: list[dict[str, Any]] = []
    prefix = None
    table = None
    for line in _without_banner(text).splitlines():
        if not line.strip():
            continue
        if line.startswith("Table "):
            table = line[len("Table "):].strip().rstrip(":") or None
            prefix = None
            continue
        if (via := _VIA.match(line)) and routes:
            routes[-1]["via"].append(via["via"])
            routes[-1]["dev"] = via["dev"]
            continue
        if (dev := _DEV.match(line)) and routes:
            routes[-1]["dev"] = dev["dev"]
            continue
        match = _ROUTE.match(line)
        if match is None:
            continue  # `show route all`'s attribute lines
        prefix = match["prefix"] or prefix
        if prefix is None:
            continue
        routes.append({"prefix": prefix, "family": 6 if ":" in prefix else 4, "table": table,
                       "type": match["type"], "protocol": match["protocol"],
                       "primary": bool(match["primary"]),
                       "preference": int(match["preference"]) if match["preference"] else None,
                       "origin": match["origin"], "via": [], "dev": None})
    return routes


def live(socket: str) -> dict[str, Any]:
    """What a daemon knows now: {"sessions": [...], "routes": [...]}; {"error": why} when it cannot say."""
    try:
        return {"sessions": sessions(ask(socket, "show", "protocols")),
                "routes": parse_routes(ask(socket, "show", "route"))}
    except BirdcError as e:
        return {"error": str(e)}


def established(socket: str, names: Sequence[str]) -> bool:
    """Whether every session in `names` is Established."""
    try:
        found = {s["name"]: s["state"] for s in sessions(ask(socket, "show", "protocols"))}
    except BirdcError:
        return False
    return all(found.get(n) == "Established" for n in names)
