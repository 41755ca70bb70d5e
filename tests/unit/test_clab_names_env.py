"""containerlab's names mapped to kernel names, its environment expansion, and its container keys."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from labkit.errors import InputError
from labkit.topology import load_plan
from labkit.topology.containers import creation_waves, memory_bytes
from labkit.topology.names import LAB_NAME, NODE_NAME, lab_key, node_key
from labkit.yamldoc import expand_env


@pytest.mark.parametrize("name", ["PC1", "pc1", "leaf_1", "Spine-Router-Number-01", "a.b", "X", "1-2-3"])
def test_node_key_is_a_kernel_name_and_deterministic(name: str) -> None:
    key = node_key(name)
    assert key == node_key(name)
    assert len(key) <= 15 and re.fullmatch(r"[a-z0-9][a-z0-9_-]*", key)
    # a name kept as it is never holds '_', a mapped one always does: the two never meet
    assert (key == name) == bool(NODE_NAME.match(name))
    assert ("_" in key) != (key == name)


def test_node_keys_of_names_differing_in_case_differ() -> None:
    assert node_key("PC1") != node_key("pc1") == "pc1"
    assert node_key("PC1") != node_key("Pc1")


@pytest.mark.parametrize("name", ["2-linux-nodes", "My_Lab.2026", "frr01", "a" * 64])
def test_lab_key_is_a_lab_name(name: str) -> None:
    assert LAB_NAME.match(lab_key(name)) and lab_key(lab_key(name)) == lab_key(name)
    assert lab_key("frr01") == "frr01"


def _topo(tmp_path: Path, text: str, name: str = "t.clab.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_upper_case_nodes_keep_their_names_and_get_kernel_safe_namespaces(tmp_path: Path) -> None:
    plan = load_plan(_topo(tmp_path, "name: Upper_Lab\ntopology:\n  nodes:\n    PC1: {kind: linux}\n"
                                     "    pc1: {kind: linux}\n"))
    assert [n.name for n in plan.nodes] == ["PC1", "pc1"]
    assert plan.title == "Upper_Lab" and plan.lab == lab_key("Upper_Lab")
    assert [n.netns for n in plan.nodes] == [f"lk-{plan.lab}.{node_key('PC1')}", f"lk-{plan.lab}.pc1"]


def test_a_k8s_node_keeps_the_kubernetes_rule(tmp_path: Path) -> None:
    path = _topo(tmp_path, "name: k\ncluster: {}\ntopology:\n  nodes:\n    Worker1: {kind: k8s-node}\n")
    with pytest.raises(InputError, match="not a name a Kubernetes node can have"):
        load_plan(path)


def test_exec_and_name_accept_the_users_lab_name() -> None:
    import argparse

    from labkit.cli import _check_names

    args = argparse.Namespace(verb="exec", lab="My_Lab.2026", name=None)
    _check_names(args)
    assert args.lab == lab_key("My_Lab.2026")


def test_env_expansion_as_containerlab() -> None:
    env = {"SET": "v", "EMPTY": ""}
    text = "a: ${SET}\nb: ${UNSET:=d1}\nc: ${EMPTY:-d2}\nd: ${EMPTY-d3}\ne: ${UNSET}\nf: $SET/x\ng: $UNSET\n"
    assert expand_env(text, "f", env) == "a: v\nb: d1\nc: d2\nd: \ne: ${UNSET}\nf: v/x\ng: $UNSET\n"


def test_env_expansion_keeps_lines_and_is_bounded() -> None:
    with pytest.raises(InputError, match=r"f:2: environment variable X holds a line break"):
        expand_env("a: 1\nb: ${X}\n", "f", {"X": "1\n2"})
    with pytest.raises(InputError, match="longer than"):
        expand_env("a: $X\n", "f", {"X": "x" * 70000})
    with pytest.raises(InputError, match="larger than"):
        expand_env("a: $X\n" * 100, "f", {"X": "x" * 60000})


def test_env_expanded_before_parsing_with_line_numbers_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LK_KIND", "router")
    path = _topo(tmp_path, "name: envk\ntopology:\n  nodes:\n    h1: {kind: '${LK_KIND}'}\n", "t.yaml")
    with pytest.raises(InputError) as info:
        load_plan(path)
    assert f"{path}:4: topology.nodes.h1.kind: unknown kind 'router'" in str(info.value)


def test_an_unrelated_unknown_key_gets_no_misleading_hint(tmp_path: Path) -> None:
    path = _topo(tmp_path, "name: hint\ntopology:\n  nodes:\n    h1: {kind: linux, mounts: [a]}\n", "t.yaml")
    with pytest.raises(InputError) as info:
        load_plan(path)
    assert "unknown key; valid keys:" in str(info.value) and "did you mean" not in str(info.value)


def test_memory_sizes_read_as_docker_reads_them() -> None:
    assert memory_bytes("1G") == memory_bytes("1GiB") == memory_bytes("1gb") == 1 << 30
    assert memory_bytes("512m") == 512 << 20 and memory_bytes("1024") == 1024


def test_creation_waves_follow_wait_for_and_refuse_circles() -> None:
    assert creation_waves({"a": (("b", "healthy"),), "b": (), "c": (("a", "create"),)}) == [["b"], ["a"], ["c"]]
    assert creation_waves({"a": (("b", "create"),), "b": (("a", "create"),)}) is None


def test_wait_for_circle_is_one_message(tmp_path: Path) -> None:
    path = _topo(tmp_path, "name: w\ntopology:\n  defaults: {kind: linux}\n  nodes:\n"
                           "    a: {wait-for: [b]}\n    b: {wait-for: [a]}\n")
    with pytest.raises(InputError, match="wait for each other in a circle"):
        load_plan(path)


def test_notes_name_the_keys_a_runtime_leaves(tmp_path: Path) -> None:
    path = _topo(tmp_path, "name: n\ntopology:\n  nodes:\n    h1: {kind: linux, binds: ['a:/a'], license: x}\n")
    netns = load_plan(path, runtime="netns").notes
    docker = load_plan(path, runtime="docker").notes
    assert netns == ("the netns runtime leaves these keys without effect: binds (h1); license (h1)",)
    assert docker == ("the docker runtime leaves these keys without effect: license (h1)",)


def test_ports_parse_and_one_owner_per_host_port(tmp_path: Path) -> None:
    path = _topo(tmp_path, "name: p\ntopology:\n  defaults: {kind: linux}\n  nodes:\n"
                           "    a: {ports: ['8080:80', '127.0.0.1:9090:90/tcp', '53:53/udp', '70']}\n")
    plan = load_plan(path)
    assert plan.nodes[0].container.ports == (("0.0.0.0", 8080, 80), ("127.0.0.1", 9090, 90))
    assert plan.notes[-1] == "ports are forwarded for TCP host:node mappings only; not forwarded: a: 53:53/udp, a: 70"
    clash = _topo(tmp_path, "name: p\ntopology:\n  defaults: {kind: linux}\n  nodes:\n"
                            "    a: {ports: ['8080:80']}\n    b: {ports: ['127.0.0.1:8080:81', '99999:1']}\n")
    with pytest.raises(InputError) as info:
        load_plan(clash)
    assert "topology.nodes.b.ports[0]: host port 8080 is already forwarded to node 'a'" in str(info.value)
    assert "'99999:1' is not a port mapping" in str(info.value)
