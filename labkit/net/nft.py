"""Apply and read nftables rule sets inside a network namespace.

`nft -f -` runs the whole text as one transaction: either every table, chain
and element is replaced or nothing changes. The namespace is entered with
`nsenter --net=<path>`, which takes both /run/netns/<name> and /proc/<pid>/ns/net.
"""

from __future__ import annotations

import re
import subprocess

from labkit.errors import LabkitError

_ERROR_AT = re.compile(r"^(?:/dev/stdin|-):(\d+):(\d+)(?:-(\d+))?: Error: (.*)$")


class NftError(LabkitError):
    """nft refused a rule set; the message has nft's reason and the offending line."""


def _command(netns_path: str | None, *args: str) -> list[str]:
    prefix = ["nsenter", f"--net={netns_path}"] if netns_path else []
    return [*prefix, "nft", *args]


def _run(netns_path: str | None, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            _command(netns_path, *args), input=stdin, capture_output=True, text=True, timeout=30, check=False
        )
    except FileNotFoundError as exc:
        raise NftError(f"cannot run {exc.filename}: not installed") from None
    except subprocess.TimeoutExpired:
        raise NftError(f"nft {' '.join(args)} did not finish in 30 s (netns {netns_path or 'host'})") from None


def explain_nft_error(stderr: str, text: str) -> str:
    """nft's first error, with the line of `text` it points at."""
    lines = text.splitlines()
    for raw in stderr.splitlines():
        match = _ERROR_AT.match(raw.strip())
        if match:
            number = int(match.group(1))
            what = match.group(4)
            source = lines[number - 1].strip() if 0 < number <= len(lines) else ""
            return f"{what} (line {number}: {source})" if source else f"{what} (line {number})"
    return stderr.strip() or "nft failed without a message"


def apply_ruleset(netns_path: str | None, text: str) -> None:
    """Run `text` through `nft -f -` in the namespace at `netns_path` (None: this namespace).

    The text should replace its table as a whole (`table ip X {}` + `delete table
    ip X` + the new table) so applying it again is atomic and idempotent.
    """
    result = _run(netns_path, ["-f", "-"], stdin=text)
    if result.returncode != 0:
        where = netns_path or "the host namespace"
        raise NftError(f"nft rejected the rule set in {where}: {explain_nft_error(result.stderr, text)}")


def check_ruleset(netns_path: str | None, text: str) -> None:
    """Like `apply_ruleset` but only checks (`nft -c`): nothing changes."""
    result = _run(netns_path, ["-c", "-f", "-"], stdin=text)
    if result.returncode != 0:
        raise NftError(f"nft rejected the rule set: {explain_nft_error(result.stderr, text)}")


def list_ruleset(netns_path: str | None, table: str | None = None, family: str = "ip") -> str:
    """The namespace's rule set (or one table of it) as `nft list` prints it."""
    args = ["list", "table", family, table] if table else ["list", "ruleset"]
    result = _run(netns_path, args)
    if result.returncode != 0:
        raise NftError(f"nft {' '.join(args)} failed in {netns_path or 'the host namespace'}: "
                       f"{result.stderr.strip()}")
    return result.stdout


def delete_table(netns_path: str | None, table: str, family: str = "ip") -> None:
    """Remove a table if it exists; nothing happens if it does not (for `down`)."""
    apply_ruleset(netns_path, f"table {family} {table} {{\n}}\ndelete table {family} {table}\n")
