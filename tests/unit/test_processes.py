"""labkit.processes: pid files, and stopping processes (TERM, then KILL), for good and only the recorded ones."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from labkit import processes


def _sleeper(*extra: str, ignore_term: bool = False) -> subprocess.Popen:
    code = "import signal, sys, time\n"
    if ignore_term:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "print('ready', flush=True)\ntime.sleep(600)\n"
    proc = subprocess.Popen([sys.executable, "-c", code, *extra], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"  # its handler is in place
    return proc


def test_a_pid_file_records_the_process_and_garbage_reads_as_none(tmp_path) -> None:
    proc = _sleeper()
    try:
        path = str(tmp_path / "d" / "server.pid")
        written = processes.write_pid_file(path, proc.pid)
        assert processes.read_pid_file(path) == written == processes.identify(proc.pid)
        assert written.start is not None
    finally:
        proc.kill()
        proc.wait()
    for text in ("", "abc", "-5", "0", "1", "\xff"):
        (tmp_path / "bad.pid").write_text(text, encoding="latin-1")
        assert processes.read_pid_file(str(tmp_path / "bad.pid")) is None
    assert processes.read_pid_file(str(tmp_path / "missing.pid")) is None


def test_stop_terms_then_kills_and_returns_once_gone_and_reaped() -> None:
    polite, stubborn = _sleeper(), _sleeper(ignore_term=True)
    procs = [processes.identify(polite.pid), processes.identify(stubborn.pid)]
    processes.forked.update({polite.pid, stubborn.pid})  # reaped by stop, as pod holders are
    processes.stop([*procs, procs[0]], grace=0.2)
    assert not processes.is_running(procs[0]) and not processes.is_running(procs[1])
    assert not os.path.exists(f"/proc/{polite.pid}")  # reaped: no zombie left
    assert not {polite.pid, stubborn.pid} & processes.forked


def test_a_pid_whose_start_time_differs_is_not_signalled() -> None:
    proc = _sleeper()
    try:
        now = processes.identify(proc.pid)
        processes.stop([processes.ProcessId(proc.pid, now.start + 1)], grace=0.1)  # a reused pid
        assert processes.is_running(now)
    finally:
        proc.kill()
        proc.wait()


def test_stop_recorded_stops_only_processes_that_are_still_the_recorded_ones(tmp_path) -> None:
    ours, stranger = _sleeper(str(tmp_path / "x")), _sleeper()
    try:
        processes.write_pid_file(str(tmp_path / "a" / "ours.pid"), ours.pid)
        (tmp_path / "stranger.pid").write_text(f"{stranger.pid} 1\n")  # another start time: not this process
        (tmp_path / "garbage.pid").write_text("x")
        assert processes.recorded(str(tmp_path / "stranger.pid")) is None
        processes.stop_recorded(str(tmp_path), marker=str(tmp_path), grace=0.5)
        assert ours.wait(timeout=5) == -signal.SIGTERM
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()
