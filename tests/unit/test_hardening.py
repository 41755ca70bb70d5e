"""Issue 11, the parts that need no root: lab names, pid identity, the per-lab lock, state files,
numeric options, pod capabilities."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from labkit import cli, lock, paths, processes, state
from labkit.errors import LabkitError
from labkit.k8s.load import parse_manifests
from labkit.runtime import podproc

BAD_NAMES = ["/", ".", "..", "/some/dir", "lab.default", "LAB", "a/b", "", "x" * 13, "-a", "a\0b"]


@pytest.fixture
def state_root(tmp_path, monkeypatch):
    root = tmp_path / "state"
    monkeypatch.setenv("LABKIT_STATE_DIR", str(root))
    return root


@pytest.mark.parametrize("name", BAD_NAMES)
def test_lab_names_are_checked_before_any_path(name, state_root):
    with pytest.raises(LabkitError, match="is not a lab name"):
        paths.lab_dir(name)
    with pytest.raises(LabkitError, match="is not a lab name"):
        state.read(name)
    with pytest.raises(LabkitError, match="is not a lab name"):
        paths.lock_path(name)


def test_paths_stay_inside_the_state_root(state_root):
    assert paths.lab_dir("kube3") == str(state_root / "kube3")
    for escape in ("../x", "/etc/passwd", "a/../../x"):
        with pytest.raises(LabkitError, match="not inside"):
            paths.lab_path("kube3", escape)


@pytest.mark.parametrize("root", ["/", "//", "relative/dir", "/run/.."])
def test_the_state_root_from_the_environment_is_checked(root, monkeypatch):
    monkeypatch.setenv("LABKIT_STATE_DIR", root)
    with pytest.raises(LabkitError, match="LABKIT_STATE_DIR"):
        paths.lab_dir("etc")


def test_state_folders_that_are_not_lab_names_are_not_labs(state_root):
    for name in ("ok-lab", "LAB", ".hidden", "a.b"):
        (state_root / name).mkdir(parents=True)
    assert state.labs() == {"ok-lab"}


@pytest.mark.parametrize("text", ["[]", "3", '"up"', "null", "{broken"])
def test_a_state_file_that_is_not_an_object_reads_as_none(text, state_root):
    (state_root / "lab1").mkdir(parents=True)
    (state_root / "lab1" / "state.json").write_text(text)
    assert state.read("lab1") is None


@pytest.mark.parametrize("argv", [
    ["status", "--name", "/"], ["status", "--name", "lab default"], ["down", "--name", "."],
    ["exec", "../x", "node", "--", "true"], ["graph", "--name", "/etc"],
    ["verify", "topologies/two-hosts.yaml", "--name", "a/b"], ["apply", "topologies/two-hosts.yaml", "--name", ".."],
    ["up", "topologies/two-hosts.yaml", "--name", "/tmp"],
])
def test_cli_refuses_a_bad_lab_name_before_doing_anything(argv, capsys, state_root):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "is not a lab name" in err and "internal error" not in err


def test_a_containerlab_lab_name_never_becomes_another_labs_prefix():
    """`lab.default` is a name by containerlab's rule: it runs mapped (labkit.topology.names), never as
    `lk-lab.default`, which would match the pods of lab `lab`."""
    from labkit.topology.names import lab_key

    assert lab_key("lab.default").startswith("lab-d-") and "." not in lab_key("lab.default")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "0", "1e9", "soon"])
def test_numeric_options_are_checked(value, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["verify", "topologies/two-hosts.yaml", f"--timeout={value}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--timeout" in err and "seconds" in err and "internal error" not in err


# ---------------------------------------------------------------- pid identity


def test_pid_files_record_the_start_time(tmp_path, sleeper):
    path = str(tmp_path / "x.pid")
    recorded = processes.write_pid_file(path, sleeper.pid)
    assert recorded.start == processes.start_time(sleeper.pid) and recorded.start is not None
    assert processes.read_pid_file(path) == recorded
    assert processes.recorded(path) == recorded
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"


def test_a_pid_with_another_start_time_is_never_signalled(tmp_path, sleeper):
    path = tmp_path / "x.pid"
    path.write_text(f"{sleeper.pid} {processes.start_time(sleeper.pid) - 1}\n")  # a pid since reused
    assert processes.recorded(str(path)) is None
    assert not processes.signal_process(processes.ProcessId(sleeper.pid, 1), 9)
    processes.stop([processes.ProcessId(sleeper.pid, 1)])
    assert sleeper.poll() is None


def test_a_bare_pid_file_must_name_a_process_started_with_the_lab_paths(tmp_path, sleeper):
    path = tmp_path / "dns" / "x.pid"
    path.parent.mkdir()
    path.write_text(f"{sleeper.pid}\n")  # written after the sleep started, but the sleep is not a lab server
    assert processes.recorded(str(path), marker=str(tmp_path)) is None
    assert processes.recorded(str(path)) is not None  # without a marker, start time vs file time only


def test_a_bare_pid_file_older_than_the_process_is_refused(tmp_path, sleeper):
    path = tmp_path / "x.pid"
    path.write_text(f"{sleeper.pid}\n")
    os.utime(path, (1, 1))  # written long before this process started: the pid was reused since
    assert processes.recorded(str(path)) is None


def test_find_naming_finds_only_labkit_processes_naming_the_folder(tmp_path):
    folder = tmp_path / "lab1"
    folder.mkdir()
    code = "import time; time.sleep(600)  # from labkit.x"
    ours = subprocess.Popen([sys.executable, "-c", code, f"--socket={folder}/cni/s.sock"])
    other = subprocess.Popen(["sleep", "600", str(folder / "x")])  # names it, but is not labkit's
    sibling = subprocess.Popen([sys.executable, "-c", code, f"--socket={folder}2/cni/s.sock"])  # lab12
    try:
        assert [p.pid for p in processes.find_naming(str(folder))] == [ours.pid]
    finally:
        for proc in (ours, other, sibling):
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- lock


def test_a_second_caller_is_told_who_holds_the_lab(state_root):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import sys
            from labkit.lock import lab_lock
            with lab_lock("lab1", "apply"):
                print("held", flush=True)
                sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        busy = rf"lab lab1 is busy: another labkit apply \(pid {holder.pid}\) holds it"
        with pytest.raises(lock.LabBusy, match=busy):
            with lock.lab_lock("lab1", "down"):
                pass
        with lock.lab_lock("lab2", "up"):  # another lab is not held
            pass
    finally:
        holder.communicate("")
    with lock.lab_lock("lab1", "down"):  # released when the holder is gone
        with lock.lab_lock("lab1", "down"):  # and re-entrant: `up` that fails runs `down` on its lab
            pass


def test_the_lock_file_may_be_removed_while_held(state_root):
    with lock.lab_lock("lab1", "down"):
        os.unlink(paths.lock_path("lab1"))
    assert not os.path.exists(paths.lock_path("lab1"))
    with lock.lab_lock("lab1", "up"):
        assert os.path.exists(paths.lock_path("lab1"))
    assert not os.path.exists(paths.lock_path("lab1"))  # a lab with no folder keeps no lock file


def test_a_lock_file_another_caller_made_is_left_alone(state_root):
    """A holder lets go of its lock file only if it is still the file it locked: once the file was
    replaced, the new one is someone else's lock and must survive."""
    with lock.lab_lock("lab1", "down"):
        os.unlink(paths.lock_path("lab1"))
        with open(paths.lock_path("lab1"), "w") as other:  # a second caller's lock file, made meanwhile
            other.write("0 up\n")
    assert os.path.exists(paths.lock_path("lab1"))


def test_write_file_refuses_a_planted_symlink(tmp_path):
    from labkit.files import write_file

    (tmp_path / "hosts").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        write_file(tmp_path / "hosts", "x")
    assert not (tmp_path / "elsewhere").exists()


def test_files_get_explicit_modes_whatever_the_umask(tmp_path):
    from labkit.files import makedirs, write_atomic, write_file

    old = os.umask(0)
    try:
        makedirs(tmp_path / "a" / "b")
        write_atomic(tmp_path / "c" / "f", "x")
        write_file(tmp_path / "c" / "g", "y")
    finally:
        os.umask(old)
    for path, mode in ((tmp_path / "a", 0o755), (tmp_path / "a" / "b", 0o755), (tmp_path / "c", 0o755),
                       (tmp_path / "c" / "f", 0o644), (tmp_path / "c" / "g", 0o644)):
        assert os.stat(path).st_mode & 0o777 == mode, path


# ---------------------------------------------------------------- capabilities


def _container(security_context: dict | None):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "command": ["sleep", "1"],
                                    **({"securityContext": security_context} if security_context else {})}]}}
    return parse_manifests(json.dumps(pod)).pods[0].spec.containers[0]


def test_pods_get_the_default_container_capabilities():
    caps = podproc.capabilities(_container(None).securityContext)
    assert set(caps) == set(podproc.DEFAULT_CAPABILITIES)
    assert "NET_ADMIN" not in caps and "SYS_ADMIN" not in caps


def _caps(security_context: dict) -> tuple[str, ...] | None:
    return podproc.capabilities(_container(security_context).securityContext)


def test_security_context_widens_and_narrows_the_set():
    assert "NET_ADMIN" in _caps({"capabilities": {"add": ["NET_ADMIN"]}})
    assert "NET_RAW" not in _caps({"capabilities": {"drop": ["CAP_NET_RAW"]}})
    assert _caps({"capabilities": {"drop": ["ALL"], "add": ["KILL"]}}) == ("KILL",)
    assert _caps({"privileged": True}) is None
    assert podproc.with_capabilities(None, ["true"]) == ["true"]
    assert podproc.with_capabilities(("KILL",), ["true"])[-2:] == ["--", "true"]


def test_an_unknown_capability_is_an_input_error():
    with pytest.raises(LabkitError, match="'NET_ADMINS' is not a capability"):
        _container({"capabilities": {"add": ["NET_ADMINS"]}})


def test_status_json_of_pods_keeps_its_keys():
    from labkit.phases.build import PodRecord

    record = PodRecord("default", "p", "w1", "10.0.0.1", "lk-a.default.p", "/run/netns/lk-a.default.p", 5)
    assert {"namespace", "name", "node", "ip", "netns", "netns_path", "pid", "labels"} <= set(record.as_status())
    json.dumps(record.as_status())


def test_a_lock_file_left_behind_is_a_leftover(state_root):
    from labkit import lab

    (state_root / "lab1").mkdir(parents=True)
    with lock.lab_lock("lab1", "up"):
        pass
    assert paths.lock_path("lab1") in lab.leftovers("lab1")
