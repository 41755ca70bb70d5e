"""Fifty node containers created and destroyed: the docker runtime at lab scale.

How long that takes is measured by the benchmarks (`invoke bench --only runtimes`), not here.
"""

from __future__ import annotations

import secrets
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


def test_fifty_nodes_up_and_down(lab, labkit_docker):
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
    sandboxes = runtime.create_nodes(name, specs)
    assert len({s.netns_path for s in sandboxes}) == NODES
    assert all(Path(s.netns_path).exists() for s in sandboxes)
    # One resolv.conf and one hosts file per distinct content, not per node.
    assert len(list((Path(runtime.state_dir) / name / "docker").iterdir())) == NODES + 1

    runtime.destroy(name)
    assert labkit_docker.containers.list(all=True, filters={"label": f"{LABEL_LAB}={name}"}) == []
