"""The Docker engine client both the docker runtime and its image builder use."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from labkit.errors import LabkitError

if TYPE_CHECKING:
    import docker

WORKERS = 8  # concurrent engine calls; dockerd on 2 cores gains little beyond this
START_SCRIPT = "scripts/start-dockerd.sh"


def engine_url(base_url: str | None = None) -> str:
    return base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect(base_url: str | None = None, *, pool_size: int = WORKERS) -> docker.DockerClient:
    """A client for the Docker engine (DOCKER_HOST or the local socket), checked with a ping."""
    import docker
    import docker.errors

    where = engine_url(base_url)
    try:
        client = docker.DockerClient(base_url=where, max_pool_size=pool_size, timeout=120)
        client.ping()
    except docker.errors.DockerException as e:
        raise LabkitError(
            f"Docker engine not reachable at {where}: start it ({START_SCRIPT}) or use runtime: netns"
            f" ({_first_line(e)})"
        ) from None
    return client


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
