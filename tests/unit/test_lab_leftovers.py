"""labkit.lab.leftovers: what a lab left behind, found from what exists (here: its folder and a process)."""

from __future__ import annotations

import subprocess
import sys

from labkit import lab, paths


def test_leftovers_name_the_state_folder_and_processes_that_name_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LABKIT_STATE_DIR", str(tmp_path))
    assert lab.leftovers("lo-1") == []
    folder = paths.lab("lo-1").dns_dir
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()", f"{folder}/config.json"],
                            stdin=subprocess.PIPE)  # any program, labkit's or not
    try:
        (tmp_path / "lo-1").mkdir()
        assert lab.leftovers("lo-1") == [str(tmp_path / "lo-1"), f"process {proc.pid}"]
        assert lab.leftovers("lo") == []  # a lab whose name is a prefix of it owns none of it
    finally:
        proc.stdin.close()
        proc.wait()
    assert lab.leftovers("lo-1") == [str(tmp_path / "lo-1")]
