"""Runtimes own the sandboxes a lab's nodes and pods live in, and this is their registry.

A runtime creates and removes sandboxes (network namespaces, or Docker
containers) and runs processes in them. Everything else - veth links,
addresses, routes, nftables, the CNI plugin - is done by labkit itself on the
sandbox's network namespace path, so it is the same for every runtime (as in
containerlab, which wires container namespaces through their PIDs).

Adding a runtime is one module (a class inheriting RuntimeBase) and one
`RUNTIMES.register` line below, plus its name in labkit.topology.schema.RUNTIMES
(the topology schema, which knows no runtime code, validates `runtime:` with it;
a test checks that the two agree). Each runtime's module is imported only when
that runtime is asked for: a docker-less lab never loads the Docker client.
"""

from __future__ import annotations

from collections.abc import Callable

from labkit.errors import LabkitError
from labkit.runtime.base import ContainerSpec, NodeSpec, PodSpec, Runtime, RuntimeBase, Sandbox

__all__ = ["RUNTIMES", "ContainerSpec", "NodeSpec", "PodSpec", "Runtime", "RuntimeBase", "RuntimeRegistry",
           "Sandbox", "get_runtime", "runtime_names"]


class RuntimeRegistry:
    """Runtime classes by name (nornir's PluginRegister shape), each loaded on first use."""

    def __init__(self) -> None:
        self._loaders: dict[str, Callable[[], type[RuntimeBase]]] = {}

    def register(self, name: str, loader: Callable[[], type[RuntimeBase]]) -> None:
        if name in self._loaders:
            raise LabkitError(f"runtime {name!r} is registered already")
        self._loaders[name] = loader

    def names(self) -> tuple[str, ...]:
        return tuple(self._loaders)

    def get(self, name: str) -> type[RuntimeBase]:
        """The class of runtime `name`; one LabkitError naming the valid runtimes if there is none."""
        try:
            loader = self._loaders[name]
        except KeyError:
            raise LabkitError(f"unknown runtime {name!r}; valid: {', '.join(self.names())}") from None
        return loader()

    def create(self, name: str) -> Runtime:
        return self.get(name)()


def _netns() -> type[RuntimeBase]:
    from labkit.runtime.netns import NetnsRuntime

    return NetnsRuntime


def _docker() -> type[RuntimeBase]:
    from labkit.runtime.docker import DockerRuntime

    return DockerRuntime


RUNTIMES = RuntimeRegistry()
RUNTIMES.register("netns", _netns)  # the embedded default: no daemon
RUNTIMES.register("docker", _docker)


def runtime_names() -> tuple[str, ...]:
    """Every valid runtime name, for CLI choices and messages."""
    return RUNTIMES.names()


def get_runtime(name: str) -> Runtime:
    return RUNTIMES.create(name)
