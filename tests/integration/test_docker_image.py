"""labkit's node and pause images, built locally and run in a real Docker engine."""

from __future__ import annotations

import io
import os
import secrets
import tarfile

import pytest

from labkit.errors import LabkitError
from labkit.runtime.docker import connect
from labkit.runtime.image import DEFAULT_IMAGE, PAUSE_IMAGE, ImageRecipe, build_images, ensure_image, recipe_digest

pytestmark = pytest.mark.integration


def run(client, *argv: str, **kwargs) -> tuple[int, str]:
    """Run argv in a throwaway container of the node image; (exit code, output)."""
    name = f"lk-test-img-{secrets.token_hex(4)}"
    container = client.containers.create(
        DEFAULT_IMAGE, list(argv), name=name, network_mode="none", **kwargs
    )
    try:
        container.start()
        code = container.wait(timeout=30)["StatusCode"]
        return code, container.logs().decode()
    finally:
        container.remove(force=True)


def test_build_is_idempotent(labkit_docker):
    assert build_images() == []
    for name in (DEFAULT_IMAGE, PAUSE_IMAGE):
        image = labkit_docker.images.get(name)
        assert image.labels["labkit.version"] and image.labels["labkit.recipe"] == recipe_digest()
        assert image.attrs["Size"] < 30 * 1024 * 1024


def test_an_image_of_another_recipe_is_refused_then_rebuilt(labkit_docker):
    """Same tag, other recipe (an upgraded labkit): `up` names the fix, `image build` replaces it."""
    recipe = ImageRecipe(f"labkit/node:test-{secrets.token_hex(3)}", "node")
    repository, tag = recipe.name.rsplit(":", 1)
    empty = io.BytesIO()
    with tarfile.open(fileobj=empty, mode="w"):
        pass
    labkit_docker.api.import_image_from_data(empty.getvalue(), repository=repository, tag=tag,
                                      changes=["LABEL labkit.recipe=0ld0ld0ld0ld"])
    try:
        with pytest.raises(LabkitError, match="built by another labkit"):
            ensure_image(labkit_docker, recipe.name)
        assert build_images(recipes=[recipe]) == [recipe.name]
        ensure_image(labkit_docker, recipe.name)
        assert build_images(recipes=[recipe]) == []
    finally:
        labkit_docker.images.remove(recipe.name, force=True)


def test_iproute2_nft_and_busybox_run_inside(labkit_docker):
    code, out = run(labkit_docker, "sh", "-c", "ip -V && nft -v && busybox | head -1 && command -v ip")
    assert code == 0, out
    assert "iproute2" in out and "nftables v" in out and "BusyBox" in out
    assert out.strip().endswith("/usr/sbin/ip")  # the real one, not busybox's applet


def test_ping_and_nft_work_with_net_admin(labkit_docker):
    script = (
        "ip link set lo up && ping -c1 -W2 127.0.0.1 && "
        "nft add table inet t && nft add chain inet t c && nft list ruleset"
    )
    code, out = run(labkit_docker, "sh", "-c", script, cap_add=["NET_ADMIN", "NET_RAW"])
    assert code == 0, out
    assert "1 packets received" in out and "table inet t" in out


def test_default_command_idles_and_stops_on_sigterm(labkit_docker):
    name = f"lk-test-img-{secrets.token_hex(4)}"
    container = labkit_docker.containers.run(PAUSE_IMAGE, name=name, network_mode="none", detach=True)
    try:
        container.reload()
        assert container.status == "running"
        container.stop(timeout=10)  # SIGTERM; the trap must end it long before the timeout
        assert container.wait(timeout=5)["StatusCode"] == 0
    finally:
        container.remove(force=True)


def test_missing_image_names_the_build_command(labkit_docker):
    with pytest.raises(LabkitError, match="invoke image"):
        ensure_image(labkit_docker, "labkit/node:0.0.0-never-built")


def test_engine_not_reachable_is_a_clear_error():
    sock = f"unix:///tmp/labkit-no-engine-{os.getpid()}.sock"
    with pytest.raises(LabkitError) as e:
        connect(sock)
    assert str(e.value).startswith(
        f"Docker engine not reachable at {sock}: start it (scripts/start-dockerd.sh) "
        "or use runtime: netns"
    )
