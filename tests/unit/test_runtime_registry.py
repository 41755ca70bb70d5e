"""The runtime registry: one list of runtimes, that every other list of runtime names agrees with."""

from __future__ import annotations

import pytest
from _pytest.config.argparsing import Parser

from labkit.errors import LabkitError
from labkit.runtime import RUNTIMES, Runtime, RuntimeBase, RuntimeRegistry, get_runtime, runtime_names
from labkit.topology.schema import RUNTIMES as SCHEMA_RUNTIMES


def test_the_schema_cli_and_plugin_name_exactly_the_registered_runtimes() -> None:
    from labkit import cli, pytest_plugin

    assert runtime_names() == SCHEMA_RUNTIMES == ("netns", "docker")
    up = next(a for a in cli._parser()._subparsers._group_actions[0].choices["up"]._actions
              if a.dest == "runtime")
    assert tuple(up.choices) == runtime_names()
    parser = Parser(_ispytest=True)
    pytest_plugin.pytest_addoption(parser)
    option = next(o for o in parser.getgroup("labkit").options if "--labkit-runtime" in o.names())
    assert tuple(option.attrs()["choices"]) == runtime_names()


def test_an_unknown_runtime_is_one_error_naming_the_valid_ones() -> None:
    with pytest.raises(LabkitError, match=r"^unknown runtime 'podman'; valid: netns, docker$"):
        get_runtime("podman")


def test_a_name_is_registered_once() -> None:
    registry = RuntimeRegistry()
    registry.register("x", lambda: RuntimeBase)
    with pytest.raises(LabkitError, match="registered already"):
        registry.register("x", lambda: RuntimeBase)


@pytest.mark.parametrize("name", ["netns", "docker"])
def test_every_runtime_inherits_the_base_and_has_every_protocol_method(name: str) -> None:
    cls = RUNTIMES.get(name)
    assert issubclass(cls, RuntimeBase) and cls.name == name
    wanted = {n for n, v in vars(Runtime).items() if callable(v) and not n.startswith("_")}
    assert wanted >= {"create_nodes", "create_pods", "create_node", "create_pod", "start_containers", "exec",
                      "remove_pod", "destroy", "labs"}
    for method in wanted:
        assert getattr(cls, method) is not getattr(Runtime, method), f"{name} lacks {method}"


def test_batch_operations_default_to_one_at_a_time() -> None:
    made = []

    class OneByOne(RuntimeBase):
        name = "one"

        def create_node(self, lab, node):
            made.append(node)
            return node

        def create_pod(self, lab, pod):
            made.append(pod)
            return pod

    rt = OneByOne()
    assert rt.create_nodes("l", ["a", "b"]) == ["a", "b"] and rt.create_pods("l", ["p"]) == ["p"]
    assert made == ["a", "b", "p"] and rt.workers == 1
