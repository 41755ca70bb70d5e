"""The node image's root filesystem, assembled from host files (no Docker engine needed)."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from labkit.errors import LabkitError
from labkit.runtime import image
from labkit.runtime.image import (
    DEFAULT_IMAGE,
    IDLE_CMD,
    PAUSE_IMAGE,
    RECIPES,
    ensure_image,
    parse_ldd,
    rootfs_entries,
    rootfs_tar,
)

LDD_IP = """\
\tlinux-vdso.so.1 (0x00007ffd2a5f4000)
\tlibbpf.so.1 => /lib/x86_64-linux-gnu/libbpf.so.1 (0x00007f27d00cc000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f27cfea3000)
\tlibbpf.so.1 => /lib/x86_64-linux-gnu/libbpf.so.1 (0x00007f27d00cc000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f27d022e000)
"""


def test_parse_ldd_keeps_libraries_and_loader_once_in_order():
    assert parse_ldd(LDD_IP) == [
        "/lib/x86_64-linux-gnu/libbpf.so.1",
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/ld-linux-x86-64.so.2",
    ]


def test_parse_ldd_missing_library_is_an_error():
    with pytest.raises(LabkitError, match="libgone.so.3 => not found"):
        parse_ldd("\tlibgone.so.3 => not found\n")


@pytest.fixture(scope="module")
def entries() -> dict[str, image.RootfsEntry]:
    return {e.path: e for e in rootfs_entries()}


def test_rootfs_has_busybox_ip_nft_and_their_libraries(entries):
    assert entries["/bin/busybox"].kind == "file"
    assert entries["/usr/sbin/ip"].kind == "file"
    assert entries["/usr/sbin/nft"].kind == "file"
    assert entries["/lib64/ld-linux-x86-64.so.2"].kind == "file"
    libs = {p.rsplit("/", 1)[-1] for p in entries if "/lib" in p and ".so" in p}
    assert {"libc.so.6", "libmnl.so.0", "libnftables.so.1"} <= libs


def test_rootfs_shell_is_dash_and_applets_do_not_shadow_real_tools(entries):
    # busybox's shell would run its own `ip` applet before PATH; dash follows PATH.
    assert entries["/bin/sh"].kind == "file" and "dash" in entries["/bin/sh"].source
    assert entries["/bin/ping"] == image.RootfsEntry("/bin/ping", "symlink", "busybox", 0o777)
    assert entries["/bin/sleep"].source == "busybox"
    assert "/bin/ip" not in entries and "/sbin/ip" not in entries


def test_rootfs_parents_come_before_children(entries):
    for path in entries:
        parent = path.rsplit("/", 1)[0]
        if parent:
            assert entries[parent].kind == "dir", path


def test_rootfs_tar_is_small_reproducible_and_owned_by_root():
    first, second = rootfs_tar(), rootfs_tar()
    assert first == second
    assert len(first) < 20 * 1024 * 1024
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())
    assert members["tmp"].mode == 0o1777
    assert members["etc/passwd"].isfile()
    assert members["bin/ping"].issym() and members["bin/ping"].linkname == "busybox"


def test_image_changes_set_path_label_and_idle_cmd():
    assert {r.name for r in RECIPES} == {DEFAULT_IMAGE, PAUSE_IMAGE}
    node = next(r for r in RECIPES if r.name == DEFAULT_IMAGE)
    changes = node.changes()
    cmd = next(c for c in changes if c.startswith("CMD "))
    assert json.loads(cmd[4:]) == IDLE_CMD
    assert any(c.startswith("ENV PATH=/usr/sbin:") for c in changes)
    assert "LABEL labkit.image=node" in " ".join(changes)


class _NoImages:
    """Just enough of a DockerClient for ensure_image: an engine with no images."""

    class images:  # mirrors client.images
        @staticmethod
        def get(name: str) -> None:
            import docker.errors

            raise docker.errors.ImageNotFound(f"No such image: {name}")


def test_missing_labkit_image_says_how_to_build_it():
    with pytest.raises(
        LabkitError, match=r"labkit/node:.* not found: build it with `invoke image`"
    ):
        ensure_image(_NoImages(), DEFAULT_IMAGE)
    with pytest.raises(LabkitError, match="labkit image build"):
        ensure_image(_NoImages(), PAUSE_IMAGE)


def test_missing_foreign_image_says_nothing_is_pulled():
    with pytest.raises(LabkitError, match="does not pull images: load it first"):
        ensure_image(_NoImages(), "nginx:1.27")


class _OneImage:
    """A DockerClient with one image of every name, carrying `labels`."""

    def __init__(self, labels: dict[str, str]):
        image = type("Image", (), {"labels": labels})()
        self.images = type("Images", (), {"get": staticmethod(lambda name: image)})()


def test_an_image_from_another_labkits_recipe_is_named_not_run():
    from labkit.runtime.image import RECIPE_LABEL, recipe_digest

    ensure_image(_OneImage({RECIPE_LABEL: recipe_digest()}), DEFAULT_IMAGE)  # current: fine
    with pytest.raises(LabkitError, match=r"built by another labkit \(recipe 0ld0ld0ld0ld, this one needs "
                                          + recipe_digest() + r"\): rebuild it with `labkit image build`"):
        ensure_image(_OneImage({RECIPE_LABEL: "0ld0ld0ld0ld"}), DEFAULT_IMAGE)
    with pytest.raises(LabkitError, match="recipe unlabelled"):
        ensure_image(_OneImage({}), PAUSE_IMAGE)
    ensure_image(_OneImage({}), "nginx:1.27")  # not labkit's: present is enough
    assert f"{RECIPE_LABEL}={recipe_digest()}" in " ".join(RECIPES[0].changes())
