"""Topology files: load (YAML with lines) -> schema (typed) -> expand (inheritance) -> plan (resolved)."""

from __future__ import annotations

import types
import typing
from pathlib import Path

import pydantic

from labkit.errors import InputError, Problem
from labkit.topology.load import Document, read_document
from labkit.topology.plan import Plan, build_plan
from labkit.topology.schema import Model, Topology

__all__ = ["Plan", "load_plan", "load_topology"]


def load_topology(path: str | Path, name: str | None = None) -> tuple[Topology, Document]:
    """Parse and type-check a topology file; InputError names file, line and field.

    `name` replaces the lab's name, so one file can run as several labs side by side.
    """
    doc = read_document(path)
    data = {**doc.data, "name": name} if name else doc.data
    try:
        return Topology.model_validate(data), doc
    except pydantic.ValidationError as exc:
        raise InputError([_problem(doc, err) for err in exc.errors()]) from None


def load_plan(path: str | Path, runtime: str | None = None, name: str | None = None) -> Plan:
    """Everything `up` needs, fully resolved; raises InputError and creates nothing."""
    topo, doc = load_topology(path, name)
    plan, problems = build_plan(topo, str(path), runtime)
    if problems:
        raise InputError([Problem(doc.file, doc.line_of(p.path), _dotted(p.path), p.message) for p in problems])
    assert plan is not None
    if plan.cluster is not None and topo.workloads:
        from labkit.k8s import load_workloads  # only clusters pay for manifest parsing

        workloads = load_workloads(topo.workloads, Path(path).resolve().parent)
        plan = _with_workloads(plan, workloads)
    return plan


def _with_workloads(plan: Plan, workloads: object) -> Plan:
    import dataclasses

    return dataclasses.replace(plan, workloads=(workloads,))


def _dotted(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _problem(doc: Document, err: dict) -> Problem:
    loc = tuple(err["loc"])
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        valid = _valid_keys(loc[:-1])
        message = "unknown key" + (f"; valid keys: {', '.join(valid)}" if valid else "")
    elif kind == "missing":
        message = "required key is missing"
    else:
        message = err["msg"].removeprefix("Value error, ")
        if kind not in ("value_error",) and not isinstance(value, (dict, list)):
            message += f" (got {value!r})"
    return Problem(doc.file, doc.line_of(loc), _dotted(loc), message)


def _valid_keys(loc: tuple) -> list[str]:
    """The keys allowed at `loc`, found by walking the schema's type annotations."""
    current: typing.Any = Topology
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, Model):
            field = next((f for n, f in current.model_fields.items() if (f.alias or n) == part), None)
            if field is None:
                return []
            current = field.annotation
        elif typing.get_origin(current) is list and isinstance(part, int):
            current = typing.get_args(current)[0]
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, Model):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _unwrap(annotation: typing.Any) -> typing.Any:
    """`X | None` -> X."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation
