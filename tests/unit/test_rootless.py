"""labkit.rootless's checks that need no namespaces: where an ordinary user's labs live, and when
labkit is inside a user namespace."""

from __future__ import annotations

import os

import pytest

from labkit import rootless
from labkit.errors import LabkitError


def test_state_root_is_the_runtime_folder(tmp_path, monkeypatch):
    os.chmod(tmp_path, 0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert rootless.state_root() == f"{tmp_path}/labkit"


@pytest.mark.parametrize("value", ["", "relative/run"])
def test_no_runtime_folder_is_refused_naming_what_to_set(monkeypatch, value):
    monkeypatch.setenv("XDG_RUNTIME_DIR", value)
    with pytest.raises(LabkitError, match=r"XDG_RUNTIME_DIR.*set XDG_RUNTIME_DIR to a folder of your own"):
        rootless.state_root()


def test_unset_runtime_folder_is_refused(monkeypatch):
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    with pytest.raises(LabkitError, match="is not set"):
        rootless.state_root()


def test_a_runtime_folder_others_may_enter_is_refused(tmp_path, monkeypatch):
    """A folder another user could write or list would hand them the lab's state (or a name to squat)."""
    os.chmod(tmp_path, 0o755)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with pytest.raises(LabkitError, match="not yours alone"):
        rootless.state_root()


def test_a_runtime_folder_of_another_user_is_refused(tmp_path, monkeypatch):
    os.chmod(tmp_path, 0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setattr(os, "getuid", lambda: os.stat(tmp_path).st_uid + 1)
    with pytest.raises(LabkitError, match="not yours alone"):
        rootless.state_root()


def test_root_is_refused_nothing(monkeypatch):
    monkeypatch.delenv("LABKIT_ROOTLESS", raising=False)
    assert rootless.joined() is False
    rootless.check_plan("docker", True)


def test_a_user_is_refused_docker_and_host_access(monkeypatch):
    monkeypatch.setenv("LABKIT_ROOTLESS", "1")
    with pytest.raises(LabkitError, match="docker runtime needs root"):
        rootless.check_plan("docker", False)
    with pytest.raises(LabkitError, match="host-access needs root"):
        rootless.check_plan("netns", True)
    rootless.check_plan("netns", False)


def test_no_holder_recorded_is_none(tmp_path):
    assert rootless.running_holder(str(tmp_path)) is None
    (tmp_path / ".holder").mkdir()
    (tmp_path / ".holder" / "pid").write_text(f"{os.getpid()} 1\n")  # a live pid, another namespace inode
    assert rootless.running_holder(str(tmp_path)) is None
