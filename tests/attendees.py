"""Ordinary users running labkit, for the rootless tests and the thirty-attendees bench (run as root).

An attendee is a system user with a runtime folder of its own (/run/user/UID, 0700, as a login
session makes it) running the labkit every user can run: the venv scripts/rootless-venv.sh makes
on Debian's python3, from a copy of this checkout (refreshed here, so the code under test is this
checkout's). Commands run through `setpriv` with a clean environment: nothing of root's leaks in.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = "/opt/labkit-rootless"
SRC = f"{VENV}/src"  # the readable copy: topologies are named from here


def refresh_venv() -> None:
    """(Re)make the rootless venv from this checkout; quick when it exists (copy and compile only)."""
    subprocess.run([str(ROOT / "scripts" / "rootless-venv.sh"), VENV], check=True, timeout=600)


@dataclass(frozen=True)
class Attendee:
    name: str
    uid: int
    gid: int

    @property
    def runtime_dir(self) -> str:
        return f"/run/user/{self.uid}"

    @property
    def state_root(self) -> str:
        return f"{self.runtime_dir}/labkit"

    def env(self) -> dict[str, str]:
        return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/",
                "XDG_RUNTIME_DIR": self.runtime_dir, "LANG": "C.UTF-8", "COLUMNS": "200"}

    def argv(self, *argv: str) -> list[str]:
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--", *argv]

    def run(self, *argv: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run a program as this user, in the readable checkout copy."""
        return subprocess.run(self.argv(*argv), capture_output=True, text=True, cwd=SRC,
                              env=self.env() if env is None else env, timeout=timeout, check=False)

    def labkit(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        proc = self.run(f"{VENV}/bin/labkit", *args, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{self.name}: labkit {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}{proc.stderr}")
        return proc

    def pids(self) -> list[int]:
        """This user's live processes (zombies waiting for init's reaping are gone already)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.stat(f"/proc/{entry}").st_uid != self.uid:
                    continue
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                    state = fh.read().rsplit(")", 1)[1].split()[0]
            except (FileNotFoundError, IndexError):
                continue
            if state != "Z":
                found.append(int(entry))
        return found


def make_attendee(name: str, *, create: bool = False) -> Attendee:
    """The user `name` (created as a system user without a home when `create`) with its runtime folder."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if not create:
            raise AssertionError(f"user {name} is missing: scripts/bootstrap.sh --test creates it") from None
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                       check=True, timeout=60)
        entry = pwd.getpwnam(name)
    user = Attendee(name, entry.pw_uid, entry.pw_gid)
    os.makedirs("/run/user", mode=0o755, exist_ok=True)
    if not os.path.isdir(user.runtime_dir):
        os.mkdir(user.runtime_dir, 0o700)
    os.chown(user.runtime_dir, user.uid, user.gid)
    os.chmod(user.runtime_dir, 0o700)
    return user


def remove_attendee(user: Attendee) -> None:
    """Delete a throwaway user and its runtime folder (its labs must be down already)."""
    shutil.rmtree(user.runtime_dir, ignore_errors=True)
    subprocess.run(["userdel", user.name], check=False, capture_output=True, timeout=60)


def host_namespaces() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()
