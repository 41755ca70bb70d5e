"""A BGP daemon as the rest of labkit sees it: its files, `down`'s and leftovers' view, status health."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from labkit import bgp, lab, processes


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LABKIT_STATE_DIR", str(tmp_path))
    return tmp_path


def _summary(lab_name: str) -> dict:
    socket = bgp.files_of(lab_name, "w1").socket
    return {"runtime": "docker", "nodes": [{"name": "w1", "bgp": {"socket": socket, "sessions": []}},
                                           {"name": "ext"}], "pods": []}


def test_a_bgp_node_without_its_daemon_is_a_health_problem(state: Path) -> None:
    assert lab.health_problems("bgpu", _summary("bgpu"), set()) == [
        "BGP daemon of node w1 is not running (labkit apply restarts it)"]


def test_a_daemon_is_known_by_its_pid_file_and_found_by_leftovers_and_down(state: Path) -> None:
    """BIRD writes its own pid file (a bare pid); trusted only for a process naming the lab's folder."""
    files = bgp.files_of("bgpu", "w1")
    os.makedirs(files.dir)
    # a stand-in for bird: a process whose command line names its config, as bird's does
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()", files.config],
                            stdin=subprocess.PIPE)
    try:
        Path(files.pid_file).write_text(f"{proc.pid}\n")
        assert bgp.running(files) == processes.identify(proc.pid) is not None
        assert lab.health_problems("bgpu", _summary("bgpu"), set()) == []
        assert f"process {proc.pid}" in lab.leftovers("bgpu")
        processes.stop_recorded(str(state / "bgpu"), marker=str(state / "bgpu"))  # what `down` does first
        proc.wait(timeout=5)
        assert bgp.running(files) is None
    finally:
        proc.kill()
        proc.wait()


def test_a_pid_file_naming_another_process_is_not_the_daemon(state: Path) -> None:
    files = bgp.files_of("bgpu", "w1")
    os.makedirs(files.dir)
    Path(files.pid_file).write_text(f"{os.getpid()}\n")  # this test's own process names no lab folder
    assert bgp.running(files) is None
    assert not bgp.stop(files)
