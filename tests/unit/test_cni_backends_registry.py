"""The CNI backends registry: the names it implements are exactly those the topology schema accepts."""

from __future__ import annotations

import typing

import pytest

from labkit.cni import backends as bk
from labkit.errors import LabkitError
from labkit.topology.schema import CNI


def _plan_backends() -> tuple[tuple[str, ...], str]:
    """The backend names the plan layer accepts, and its default."""
    try:
        from labkit.topology.kinds import CNI_BACKENDS, DEFAULT_CNI_BACKEND
    except ImportError:  # until the plan's kinds module lands: the schema's Literal is the list
        field = CNI.model_fields["backend"]
        return typing.get_args(field.annotation), field.default
    return CNI_BACKENDS, DEFAULT_CNI_BACKEND


def test_registry_implements_exactly_the_backends_the_plan_accepts():
    accepted, default = _plan_backends()
    assert accepted and set(bk.REGISTRY.names()) == set(accepted)
    assert default in bk.REGISTRY


def test_unknown_backend_is_one_error_listing_the_valid_names():
    with pytest.raises(bk.UnknownBackend) as info:
        bk.get_backend("weave")
    assert isinstance(info.value, LabkitError) and isinstance(info.value, ValueError)
    assert str(info.value) == "unknown CNI backend 'weave'; valid: host-gw, vxlan, bgp"


def test_each_backend_satisfies_the_protocol():
    for name in bk.REGISTRY.names():
        impl = bk.get_backend(name)
        assert impl.name == name
        for method in ("apply", "remove", "pod_mtu"):
            assert callable(getattr(impl, method))
    assert bk.get_backend("host-gw").pod_mtu(1500) == 1500 and bk.get_backend("vxlan").pod_mtu(9000) == 8950


def test_a_name_registers_once():
    register = bk.BackendRegister()
    register.register(bk.REGISTRY.get("vxlan").__class__)
    with pytest.raises(ValueError, match="already registered"):
        register.register(bk.REGISTRY.get("vxlan").__class__)
    assert register.names() == ("vxlan",)
