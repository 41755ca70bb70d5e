"""labkit.paths: every file of a lab under its folder, and no name that would leave the state root."""

from __future__ import annotations

import os

import pytest

from labkit import paths, state
from labkit.errors import LabkitError


@pytest.fixture(autouse=True)
def state_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def test_every_path_of_a_lab_is_inside_its_folder(state_root) -> None:
    lab = paths.lab("kube3")
    assert lab.dir == str(state_root / "kube3")
    for path in (lab.state_file, lab.cni_dir, lab.cni_socket, lab.cni_bin_dir, lab.cni_server_pid,
                 lab.cni_server_log, lab.conflist("w1"), lab.ipam_dir("w1"), lab.dns_dir, lab.dns_config,
                 lab.dns_pid_file("labkit-dns-abc"), lab.pod_dir("default", "web"), lab.docker_dir):
        assert os.path.commonpath([path, lab.dir]) == lab.dir and path != lab.dir
    assert lab.conflist("w1").endswith("/cni/w1/10-labkit.conflist")


def test_the_state_root_follows_the_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LABKIT_STATE_DIR", str(tmp_path / "elsewhere"))
    assert paths.lab_dir("a") == str(tmp_path / "elsewhere" / "a") == state.lab_dir("a")
    monkeypatch.delenv("LABKIT_STATE_DIR")
    assert paths.lab_dir("a") == "/run/labkit/a"
    assert paths.lab("a", root=str(tmp_path)).docker_dir == str(tmp_path / "a" / "docker")


@pytest.mark.parametrize("name", ["/", ".", "..", "../x", "LAB.default", "a/b", "", "-a", "a-", "x" * 13,
                                  "lab\0", "Kube3", "a.b"])
def test_a_name_that_is_no_lab_name_never_becomes_a_path(name: str) -> None:
    with pytest.raises(LabkitError, match="is not a lab name: use 1-12 lowercase letters, digits or '-'"):
        paths.lab(name)
    with pytest.raises(LabkitError, match="is not a lab name"):
        state.read(name)


@pytest.mark.parametrize("path_of", [
    lambda lab: lab.conflist(".."), lambda lab: lab.ipam_dir("."), lambda lab: lab.ipam_dir("../x"),
    lambda lab: lab.conflist_dir(""), lambda lab: lab.dns_pid_file("../../etc/x"),
    lambda lab: lab.pod_dir("default", "../../etc"), lambda lab: lab.pod_dir("a/b", "c"), lambda lab: lab.path(".."),
    lambda lab: lab.path("/etc"), lambda lab: lab.path("a", "../../b"),
])
def test_parts_that_would_leave_the_lab_folder_are_refused(path_of) -> None:
    with pytest.raises(LabkitError, match="cannot name a file or folder of a lab|is not inside"):
        path_of(paths.lab("kube3"))


def test_the_lab_name_rule_is_the_topologys() -> None:
    from labkit.topology.schema import LAB_NAME

    assert paths.LAB_NAME is LAB_NAME  # imported, not copied


def test_only_lab_named_folders_are_labs(state_root) -> None:
    for name in ("kube3", "a-1", ".hidden", "UPPER", "x" * 13):
        (state_root / name).mkdir(parents=True)
    (state_root / "file").write_text("")
    assert paths.lab_names() == state.labs() == {"kube3", "a-1"}


@pytest.mark.parametrize("name", ["/", ".", "../x", "LAB.default"])
def test_down_status_and_exec_refuse_a_name_before_it_touches_anything(name: str, state_root) -> None:
    from labkit import lab

    state_root.mkdir()
    (state_root / "keep").write_text("")
    for verb in (lambda: lab.down(name), lambda: lab.status(name), lambda: lab.exec_in(name, "n", ["true"]),
                 lambda: lab.leftovers(name)):
        with pytest.raises(LabkitError, match="is not a lab name"):
            verb()
    assert [p.name for p in state_root.iterdir()] == ["keep"]
