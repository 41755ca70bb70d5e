"""labkit.processes: pid files, and stopping processes (TERM, then KILL), for good."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from labkit import processes


def test_a_pid_file_round_trips_and_garbage_reads_as_none(tmp_path) -> None:
    path = str(tmp_path / "d" / "server.pid")
    processes.write_pid_file(path, 4242)
    assert processes.read_pid_file(path) == 4242
    for text in ("", "abc", "-5", "0", "\xff"):
        (tmp_path / "bad.pid").write_text(text, encoding="latin-1")
        assert processes.read_pid_file(str(tmp_path / "bad.pid")) is None
    assert processes.read_pid_file(str(tmp_path / "missing.pid")) is None


def _sleeper(*extra: str, ignore_term: bool = False) -> subprocess.Popen:
    code = "import signal, sys, time\n"
    if ignore_term:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "print('ready', flush=True)\ntime.sleep(600)\n"
    proc = subprocess.Popen([sys.executable, "-c", code, *extra], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"  # its handler is in place
    return proc


def test_stop_terms_then_kills_and_returns_once_gone() -> None:
    polite, stubborn = _sleeper(), _sleeper(ignore_term=True)
    processes.forked.update({polite.pid, stubborn.pid})  # reaped by stop, as pod holders are
    processes.stop([polite.pid, stubborn.pid, polite.pid], grace=0.2)
    assert not processes.alive(polite.pid) and not processes.alive(stubborn.pid)
    assert not os.path.exists(f"/proc/{polite.pid}")  # reaped: no zombie left
    assert polite.pid not in processes.forked


def test_stop_recorded_stops_only_processes_that_are_still_ours(tmp_path) -> None:
    ours = _sleeper(str(tmp_path / "labkit-marker"))  # its command line names labkit
    stranger = _sleeper()
    try:
        processes.write_pid_file(str(tmp_path / "a" / "ours.pid"), ours.pid)
        processes.write_pid_file(str(tmp_path / "stranger.pid"), stranger.pid)
        (tmp_path / "garbage.pid").write_text("x")
        assert processes.recorded_pid(str(tmp_path / "stranger.pid")) is None
        processes.stop_recorded(str(tmp_path), grace=0.5)
        assert ours.wait(timeout=5) == -signal.SIGTERM
        assert processes.alive(stranger.pid)
    finally:
        stranger.kill()
        stranger.wait()


def test_naming_finds_processes_by_their_command_line(tmp_path) -> None:
    marker = str(tmp_path / "lab-folder") + "/"
    proc = _sleeper(marker + "dns.pid")
    try:
        assert processes.naming(marker) == [proc.pid]
    finally:
        proc.kill()
        proc.wait()
    assert processes.naming(marker) == []
