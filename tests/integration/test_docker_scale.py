"""Fifty node containers created and destroyed, timed: the docker runtime at lab scale.

The engine's per-container cost (dockerd, a containerd shim and runc per
container) is CPU-bound, so the thread pool buys roughly the number of cores;
the times are printed for the record, and bounded only loosely.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from labkit.runtime import NodeSpec
from labkit.runtime.docker import LABEL_LAB, DockerRuntime

pytestmark = pytest.mark.integration

NODES = 50


@pytest.fixture
def lab(labkit_docker, tmp_path):
    runtime = DockerRuntime(labkit_docker, state_dir=str(tmp_path))
    name = "t" + secrets.token_hex(4)
    yield runtime, name
    runtime.destroy(name)


def test_fifty_nodes_up_and_down(lab, labkit_docker, capsys, record_property):
    runtime, name = lab
    specs = [
        NodeSpec(
            name=f"n{i}",
            kind="linux",
            netns=f"lk-{name}.n{i}",
            hosts=f"127.0.0.1 localhost\n172.31.0.{i + 2} n{i}\n",
            resolv_conf="nameserver 10.96.0.10\n",
        )
        for i in range(NODES)
    ]
    t0 = time.perf_counter()
    sandboxes = runtime.create_nodes(name, specs)
    created = time.perf_counter() - t0
    assert len({s.netns_path for s in sandboxes}) == NODES
    assert all(Path(s.netns_path).exists() for s in sandboxes)
    # One resolv.conf and one hosts file per distinct content, not per node.
    assert len(list((Path(runtime.state_dir) / name / "docker").iterdir())) == NODES + 1

    t0 = time.perf_counter()
    runtime.destroy(name)
    destroyed = time.perf_counter() - t0
    assert labkit_docker.containers.list(all=True, filters={"label": f"{LABEL_LAB}={name}"}) == []

    record_property("create_s", round(created, 2))
    record_property("destroy_s", round(destroyed, 2))
    with capsys.disabled():
        print(
            f"\n  docker runtime, {NODES} nodes, {runtime.workers} workers: "
            f"create {created:.2f}s ({1000 * created / NODES:.0f} ms/node), "
            f"destroy {destroyed:.2f}s"
        )
    assert created < 120 and destroyed < 60
