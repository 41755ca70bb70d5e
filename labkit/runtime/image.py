"""labkit's own container images, built on this machine with no registry.

The docker runtime runs nodes and pause containers from two small images:
a root filesystem of the host's static busybox plus the host's `ip` (iproute2)
and `nft` binaries with the shared libraries `ldd` says they need, imported
with `docker import`. Nothing is pulled, so a lab works on an offline laptop.

    labkit/node:<version>   CMD: sleep until SIGTERM (a node's idle process)
    labkit/pause:<version>  CMD: the same; holds a pod's network namespace

Build them with `python -m labkit.runtime.image` (or `invoke image`,
`labkit image build`).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from labkit import __version__
from labkit.errors import LabkitError

if TYPE_CHECKING:
    import docker

VERSION = __version__
NODE_REPOSITORY = "labkit/node"
PAUSE_REPOSITORY = "labkit/pause"
DEFAULT_IMAGE = f"{NODE_REPOSITORY}:{VERSION}"
PAUSE_IMAGE = f"{PAUSE_REPOSITORY}:{VERSION}"
BUILD_HINT = (
    "build it with `invoke image` (or `labkit image build`, `python -m labkit.runtime.image`)"
)

BUSYBOX = "/bin/busybox"
# Host binaries the labs need beyond busybox, and where they go in the image.
# dash is /bin/sh because Debian's busybox shell runs its own applets before
# PATH, so `sh -c "ip ..."` would get busybox's small `ip`, not iproute2's.
# socat and getent let a lab's checks run the same commands in a pod on either runtime.
# (Not dig: its ICU data alone is 30 MB; run it from the host in the pod's network namespace.)
HOST_TOOLS = {"ip": "/usr/sbin/ip", "nft": "/usr/sbin/nft", "dash": "/bin/sh", "socat": "/usr/bin/socat",
              "getent": "/usr/bin/getent"}
# Small host files the tools read (protocol/service names, iproute2 tables).
HOST_FILES = ("/etc/protocols", "/etc/services", "/etc/ethertypes")
HOST_DIRS = ("/etc/iproute2",)

PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
SEARCH_PATH = PATH + ":/usr/local/sbin:/usr/local/bin"
# PID 1 ignores signals it has no handler for, so `sleep` alone would make every
# `docker stop` wait for its timeout; a trap makes SIGTERM end the container at once.
IDLE_SCRIPT = "trap 'exit 0' TERM INT; while :; do sleep 86400 & wait $!; done"
IDLE_CMD = ["/bin/sh", "-c", IDLE_SCRIPT]

_EPOCH = 0  # fixed mtime: the same host files give the same layer


@dataclass(frozen=True)
class ImageRecipe:
    """One image to import: its name, and the Dockerfile-style changes applied."""

    name: str
    role: str

    def changes(self) -> list[str]:
        return [
            f"ENV PATH={PATH}",
            f"LABEL labkit.image={self.role} labkit.version={VERSION} {RECIPE_LABEL}={recipe_digest()}",
            "CMD " + _json_list(IDLE_CMD),
        ]


RECIPE_LABEL = "labkit.recipe"


@functools.cache
def recipe_digest() -> str:
    """What the images are made of, as a short hash of this module (what goes into the root filesystem
    and how). The tag stays `<version>` between releases; an image whose label differs was built by
    another labkit, so `image build` replaces it and `up` says so instead of running it."""
    with open(__file__, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()[:12]


RECIPES = (ImageRecipe(DEFAULT_IMAGE, "node"), ImageRecipe(PAUSE_IMAGE, "pause"))


def _json_list(items: Iterable[str]) -> str:
    return json.dumps(list(items))


# --- root filesystem ---------------------------------------------------------

_LDD_LINE = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")


def parse_ldd(output: str) -> list[str]:
    """Absolute paths of the shared objects in `ldd` output (vdso excluded), in order."""
    paths: list[str] = []
    for line in output.splitlines():
        if "not found" in line:
            raise LabkitError(
                f"cannot build the labkit image: a library is missing: {line.strip()}"
            )
        m = _LDD_LINE.match(line)
        if m and m.group(1) not in paths:
            paths.append(m.group(1))
    return paths


def shared_libraries(binary: str) -> list[str]:
    """The shared libraries (and the dynamic loader) `binary` needs, as ldd resolves them."""
    proc = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        if "not a dynamic executable" in proc.stdout + proc.stderr:
            return []
        raise LabkitError(f"cannot build the labkit image: ldd {binary}: {proc.stderr.strip()}")
    return parse_ldd(proc.stdout)


def busybox_applets(busybox: str = BUSYBOX) -> list[str]:
    proc = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    return sorted(a for a in proc.stdout.split() if a and "/" not in a)


def _find_tool(name: str) -> str:
    for d in SEARCH_PATH.split(":"):
        candidate = os.path.join(d, name)
        if os.access(candidate, os.X_OK):
            return os.path.realpath(candidate)
    package = {"ip": "iproute2", "nft": "nftables", "getent": "libc-bin"}.get(name, name)
    raise LabkitError(
        f"cannot build the labkit image: `{name}` not found on this host (install {package})"
    )


@dataclass(frozen=True)
class RootfsEntry:
    """One member of the image's root filesystem."""

    path: str  # absolute path inside the image
    kind: str  # "dir" | "file" | "symlink"
    source: str = ""  # host file to copy (file) or link target (symlink)
    mode: int = 0o755


def rootfs_entries() -> list[RootfsEntry]:
    """Everything the image holds: directories, busybox and its applets, ip, nft, libraries."""
    if not os.access(BUSYBOX, os.X_OK):
        raise LabkitError(
            f"cannot build the labkit image: {BUSYBOX} missing (apt-get install busybox-static)"
        )
    entries: dict[str, RootfsEntry] = {}

    def add(entry: RootfsEntry) -> None:
        parent = os.path.dirname(entry.path)
        if parent != "/" and parent not in entries:
            add(RootfsEntry(parent, "dir"))
        entries.setdefault(entry.path, entry)

    for d, mode in (
        ("/proc", 0o555),
        ("/sys", 0o555),
        ("/dev", 0o755),
        ("/tmp", 0o1777),
        ("/run", 0o755),
        ("/root", 0o700),
        ("/var/tmp", 0o1777),
        ("/etc", 0o755),
    ):
        add(RootfsEntry(d, "dir", mode=mode))

    tools = {name: _find_tool(name) for name in HOST_TOOLS}
    for name, dest in HOST_TOOLS.items():
        add(RootfsEntry(dest, "file", tools[name]))
    add(RootfsEntry(BUSYBOX, "file", BUSYBOX))
    for applet in busybox_applets():
        if applet in HOST_TOOLS or applet == "sh":  # the real tools, not busybox's subsets
            continue
        add(RootfsEntry(f"/bin/{applet}", "symlink", "busybox", mode=0o777))
    for binary in tools.values():
        for lib in shared_libraries(binary):
            add(RootfsEntry(lib, "file", os.path.realpath(lib)))
    for f in HOST_FILES:
        if os.path.isfile(f):
            add(RootfsEntry(f, "file", f, mode=0o644))
    for d in HOST_DIRS:
        for root, _dirs, files in os.walk(d):
            for f in files:
                p = os.path.join(root, f)
                if os.path.isfile(p):
                    add(RootfsEntry(p, "file", p, mode=0o644))
    return sorted(entries.values(), key=lambda e: e.path)


_GENERATED = {
    "/etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    "/etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "/etc/nsswitch.conf": "hosts: files dns\nnetworks: files\n",
    "/etc/os-release": f'NAME="labkit node"\nID=labkit\nVERSION_ID="{VERSION}"\n',
}


def rootfs_tar(entries: list[RootfsEntry] | None = None) -> bytes:
    """The image's root filesystem as an uncompressed tar, ready for `docker import`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in rootfs_entries() if entries is None else entries:
            info = tarfile.TarInfo(e.path.lstrip("/"))
            info.mtime, info.uid, info.gid, info.mode = _EPOCH, 0, 0, e.mode
            if e.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif e.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, e.source
                tar.addfile(info)
            else:
                with open(e.source, "rb") as f:
                    data = f.read()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        for path, text in _GENERATED.items():
            data = text.encode()
            info = tarfile.TarInfo(path.lstrip("/"))
            info.mtime, info.mode, info.size = _EPOCH, 0o644, len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# --- images in the engine ----------------------------------------------------


def image_present(client: docker.DockerClient, name: str) -> bool:
    return _image_labels(client, name) is not None


def _image_labels(client: docker.DockerClient, name: str) -> dict[str, str] | None:
    """The image's labels ({} for none), or None when the engine has no such image."""
    import docker.errors

    try:
        image = client.images.get(name)
    except docker.errors.ImageNotFound:
        return None
    return dict(getattr(image, "labels", None) or {})


def _is_labkits(name: str) -> bool:
    return name.startswith((NODE_REPOSITORY + ":", PAUSE_REPOSITORY + ":"))


def image_current(client: docker.DockerClient, name: str) -> bool:
    """Present, and built from this labkit's recipe."""
    labels = _image_labels(client, name)
    return labels is not None and labels.get(RECIPE_LABEL) == recipe_digest()


def ensure_image(client: docker.DockerClient, name: str) -> None:
    """Fail with a clear LabkitError unless `name` is in the engine (nothing is pulled), and, for
    labkit's own images, built from this labkit's recipe."""
    labels = _image_labels(client, name)
    if labels is not None:
        if _is_labkits(name) and labels.get(RECIPE_LABEL) != recipe_digest():
            raise LabkitError(f"Docker image {name} was built by another labkit (recipe "
                              f"{labels.get(RECIPE_LABEL, 'unlabelled')}, this one needs {recipe_digest()}): "
                              f"rebuild it with `labkit image build` (or `invoke image`)")
        return
    if _is_labkits(name):
        raise LabkitError(f"Docker image {name} not found: {BUILD_HINT}")
    raise LabkitError(
        f"Docker image {name} not found in the Docker engine and labkit does not pull images: "
        f"load it first (`docker load -i IMAGE.tar`, or `docker pull {name}` where a registry is reachable)"
    )


def _import(client: docker.DockerClient, tar: bytes, recipe: ImageRecipe) -> None:
    import docker.errors

    repository, tag = recipe.name.rsplit(":", 1)
    try:
        result = client.api.import_image_from_data(
            tar, repository=repository, tag=tag, changes=recipe.changes()
        )
    except docker.errors.APIError as e:
        raise LabkitError(f"docker import of {recipe.name} failed: {e.explanation or e}") from None
    for line in _result_lines(result):
        if "error" in line.lower() and '"status"' not in line:
            raise LabkitError(f"docker import of {recipe.name} failed: {line}")
    if not image_present(client, recipe.name):
        raise LabkitError(f"docker import of {recipe.name} failed: {result!r}")


def _result_lines(result: object) -> Iterator[str]:
    if isinstance(result, bytes):
        result = result.decode(errors="replace")
    if isinstance(result, str):
        yield from (line for line in result.splitlines() if line.strip())


def build_images(force: bool = False, client: docker.DockerClient | None = None,
                 recipes: Iterable[ImageRecipe] = RECIPES) -> list[str]:
    """Import labkit's node and pause images; skip those present and built from this labkit's
    recipe unless `force`. Returns the names of the images built (empty when all were current).
    """
    from labkit.runtime.engine import connect

    client = client or connect()
    todo = [r for r in recipes if force or not image_current(client, r.name)]
    if not todo:
        return []
    tar = rootfs_tar()
    built = []
    for recipe in todo:
        old = _image_id(client, recipe.name)
        _import(client, tar, recipe)
        if old and old != _image_id(client, recipe.name):
            _remove_quietly(client, old)  # the replaced image, unless a container still uses it
        if recipe in RECIPES:  # manifests say `image: labkit/node`, which Docker reads as :latest
            client.images.get(recipe.name).tag(recipe.name.split(":")[0], "latest")
        built.append(recipe.name)
    return built


def _image_id(client: docker.DockerClient, name: str) -> str | None:
    import docker.errors

    try:
        return client.images.get(name).id
    except docker.errors.ImageNotFound:
        return None


def _remove_quietly(client: docker.DockerClient, image_id: str) -> None:
    import docker.errors

    try:
        client.images.remove(image_id)
    except docker.errors.APIError:
        pass


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m labkit.runtime.image", description="Build labkit's Docker images locally."
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if present")
    args = parser.parse_args(argv)
    try:
        built = build_images(force=args.force)
    except LabkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    for r in RECIPES:
        print(f"{r.name}: {'built' if r.name in built else 'present'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
