"""Loading: YAML with lines, duplicate keys, field paths, and schema errors turned into problems."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from labkit.errors import InputError, Problem
from labkit.topology import load_plan, load_topology
from labkit.yamldoc import dotted, parse_documents, read_document


def _doc(text: str):
    docs = parse_documents(textwrap.dedent(text), "t.yaml")
    assert len(docs) == 1
    return docs[0]


def _problems(tmp_path: Path, text: str) -> list[Problem]:
    path = tmp_path / "t.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(InputError) as info:
        load_plan(path)
    return info.value.problems


def _one(tmp_path: Path, text: str) -> tuple[int | None, str, str]:
    problems = _problems(tmp_path, text)
    assert len(problems) == 1, problems
    return problems[0].line, problems[0].field, problems[0].message


# ---------------------------------------------------------------- lines


def test_line_of_keys_and_items() -> None:
    doc = _doc("""\
        name: x
        topology:
          nodes:
            h1:
              kind: linux
          links:
            - endpoints:
                - h1:eth1
                - h2:eth1
    """)
    assert doc.line_of(()) == 1
    assert doc.line_of(("name",)) == 1
    assert doc.line_of(("topology", "nodes", "h1", "kind")) == 5
    assert doc.line_of(("topology", "links", 0)) == 7
    assert doc.line_of(("topology", "links", 0, "endpoints", 1)) == 9
    # a part that does not exist: the line of the deepest part that does
    assert doc.line_of(("topology", "nodes", "h1", "image")) == 4
    assert doc.line_of(("topology", "links", 5, "mtu")) == 6
    assert doc.line_of(("nothing", "here")) == 1


def test_several_documents_keep_their_own_lines() -> None:
    docs = parse_documents("a: 1\n---\n# comment\nb:\n  c: 2\n", "m.yaml")
    assert [d.data for d in docs] == [{"a": 1}, {"b": {"c": 2}}]
    assert docs[1].root_line == 4
    assert docs[1].line_of(("b", "c")) == 5


def test_merge_keys_and_aliases_are_refused_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(textwrap.dedent("""\
        name: merge
        topology:
          defaults: &base
            image: alpine
          nodes:
            h1:
              <<: *base
              kind: linux
    """))
    with pytest.raises(InputError) as info:
        load_plan(path)
    assert str(info.value) == (f"{path}:3: YAML anchor '&base' is not accepted: labkit does not expand anchors "
                               "and aliases; write the value out where it is used")


# ---------------------------------------------------------------- duplicate keys


@pytest.mark.parametrize(
    ("text", "line", "field"),
    [
        ("a: 1\na: 2\n", 2, "a"),
        ("x:\n  - {m: 1, m: 2}\n", 2, "x[0].m"),
        ("x:\n  y:\n    z: 1\n  y: 2\n", 4, "x.y"),
        ("x:\n  'a b': 1\n  'a b': 2\n", 3, "x['a b']"),
    ],
)
def test_duplicate_keys_name_the_full_path(text: str, line: int, field: str) -> None:
    with pytest.raises(InputError) as info:
        parse_documents(text, "d.yaml")
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.field) == ("d.yaml", line, field)
    assert problem.message.startswith("duplicate key (first defined on line ")


# ---------------------------------------------------------------- syntax and shape


def test_syntax_error_names_the_line_and_where_the_construct_began() -> None:
    with pytest.raises(InputError) as info:
        parse_documents('a: 1\nb: "open\nc: 3\n', "s.yaml")
    (problem,) = info.value.problems
    assert problem.line == 4
    assert problem.message.startswith("YAML syntax error: ")
    assert "that starts on line 2" in problem.message


def test_a_value_python_cannot_hold_is_an_input_error() -> None:
    with pytest.raises(InputError) as info:
        parse_documents("a: " + "9" * 5000 + "\n", "s.yaml")
    (problem,) = info.value.problems
    assert problem.file == "s.yaml" and problem.message.startswith("unreadable value: Exceeds the limit")


@pytest.mark.parametrize(
    ("text", "found"),
    [("", "the file is empty"), ("- a\n", "found a list"), ("just text\n", "found a scalar"),
     ("a: 1\n---\nb: 2\n", "found 2 documents")],
)
def test_a_topology_is_one_mapping(tmp_path: Path, text: str, found: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        read_document(path)
    assert str(info.value).endswith(found)


# ---------------------------------------------------------------- field paths


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ((), ""),
        (("name",), "name"),
        (("topology", "links", 0, "endpoints", 1), "topology.links[0].endpoints[1]"),
        (("topology", "nodes", "a;b"), "topology.nodes['a;b']"),
        (("sysctls", "net.ipv4.ip_forward"), "sysctls['net.ipv4.ip_forward']"),
        (("mgmt", "ipv4-subnet"), "mgmt.ipv4-subnet"),
    ],
)
def test_dotted(path: tuple, text: str) -> None:
    assert dotted(path) == text


# ---------------------------------------------------------------- schema messages


def test_unknown_key_suggests_the_near_one_and_lists_the_valid(tmp_path: Path) -> None:
    line, field, message = _one(tmp_path, """\
        name: x
        cluster:
          cni: {backnd: vxlan}
        topology:
          nodes: {cp: {kind: k8s-node}}
    """)
    assert (line, field) == (3, "cluster.cni.backnd")
    assert message == "unknown key (did you mean 'backend'?); valid keys: backend, mode, mtu, masquerade, bgp"


def test_a_typo_is_not_also_reported_missing(tmp_path: Path) -> None:
    problems = _problems(tmp_path, "name: x\ntopolgy:\n  nodes: {h1: {kind: linux}}\n")
    assert [(p.line, p.field) for p in problems] == [(2, "topolgy")]


def test_a_key_far_from_every_valid_one_gets_no_guess(tmp_path: Path) -> None:
    _, field, message = _one(tmp_path, "name: x\nzzzzzz: 1\ntopology:\n  nodes: {h1: {kind: linux}}\n")
    assert field == "zzzzzz"
    assert message.startswith("unknown key; valid keys: name, ")


def test_union_values_get_one_message(tmp_path: Path) -> None:
    line, field, message = _one(tmp_path, """\
        name: x
        topology:
          nodes:
            h1:
              kind: linux
              env: {A: [1, 2]}
    """)
    assert (line, field) == (6, "topology.nodes.h1.env.A")
    assert message == "should be a string, a number or true or false"


@pytest.mark.parametrize(
    ("snippet", "field", "message"),
    [
        ("mgmt: {ipv4-subnet: 172.31.0.1/24}", "mgmt.ipv4-subnet",
         "'172.31.0.1/24' is not an IPv4 network like 10.0.0.0/24: 172.31.0.1/24 has host bits set"),
        ("mgmt: {host-access: maybe}", "mgmt.host-access", "should be true or false (got 'maybe')"),
        ("runtime: [netns]", "runtime", "should be 'netns' or 'docker'"),
        ("name: 7", "name", "should be a string (got 7)"),
    ],
)
def test_type_messages_say_what_is_valid(tmp_path: Path, snippet: str, field: str, message: str) -> None:
    text = "topology:\n  nodes: {h1: {kind: linux}}\n" + snippet + "\n"
    if not snippet.startswith("name:"):
        text = "name: x\n" + text
    problems = _problems(tmp_path, text)
    assert [(p.field, p.message) for p in problems] == [(field, message)]


def test_no_problem_without_a_line(tmp_path: Path) -> None:
    problems = _problems(tmp_path, """\
        name: x
        mgmt: {ipv4-subnet: 10.0.0.0/30}
        cluster: {pod-cidr: 10.244.0.0/30, service-cidr: 10.244.0.0/16, dns: {ip: 1.1.1.1}}
        topology:
          nodes:
            a: {kind: k8s-node}
            b: {kind: k8s-node, mgmt-ipv4: 10.9.9.9}
            c: {group: nope}
          links:
            - endpoints: [a:eth0, zz:eth1]
    """)
    assert len(problems) >= 5
    assert all(p.line is not None and p.file.endswith("t.yaml") and p.field for p in problems), problems


def test_load_topology_returns_the_typed_model(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("name: x\ntopology:\n  nodes:\n    h1:\n")
    topo, doc = load_topology(path)
    assert topo.name == "x"
    assert topo.topology.nodes["h1"].kind is None  # an empty node is allowed by the schema
    assert doc.line_of(("topology", "nodes", "h1")) == 4


def test_expect_problems_come_with_the_topologys_own_in_one_message(tmp_path: Path) -> None:
    problems = _problems(tmp_path, """\
        name: both
        topology:
          nodes:
            h1: {kind: linx}
        expect:
          - {from: h1, to: "10.0.0.1:99999", result: open}
    """)
    assert [(p.line, p.field) for p in problems] == [(4, "topology.nodes.h1.kind"), (6, "expect[0].to")]
