"""Topology files: load (YAML with lines) -> schema (typed) -> expand (inheritance) -> plan (resolved)."""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import types
import typing
from pathlib import Path

import pydantic

from labkit.errors import InputError, Problem
from labkit.topology.expect import expect_problems
from labkit.topology.clab import raw_kind_problems
from labkit.yamldoc import Document, dotted, read_expanded_document
from labkit.topology.plan import Plan, build_plan
from labkit.topology.schema import Model, Topology

__all__ = ["Plan", "load_plan", "load_topology"]


def load_topology(path: str | Path, name: str | None = None) -> tuple[Topology, Document]:
    """Parse and type-check a topology file; InputError names file, line and field.

    `name` replaces the lab's name, so one file can run as several labs side by side.
    """
    doc = read_expanded_document(path)
    data = {**doc.data, "name": name} if name else doc.data
    try:
        return Topology.model_validate(data), doc
    except pydantic.ValidationError as exc:
        errors = exc.errors()
        # `topolgy:` is reported as an unknown key "did you mean 'topology'?"; that 'topology'
        # is then missing too says the same thing twice, so leave that out.
        meant = {tuple(e["loc"][:-1]) + (_close_key(e),) for e in errors if e["type"] == "extra_forbidden"}
        errors = [e for e in errors if not (e["type"] == "missing" and tuple(e["loc"]) in meant)]
        errors = _merge_union_errors(errors)
        found = [_problem(doc, err) for err in errors]
        # an unknown kind is named in this same run (the plan, which names it otherwise, is not reached)
        kind_fields = {p.field for p in found}
        found += [Problem(doc.file, doc.line_of(path), _dotted(path), text) for path, text in raw_kind_problems(data)
                  if _dotted(path) not in kind_fields]
        raise InputError(_by_line(found)) from None


def load_plan(path: str | Path, runtime: str | None = None, name: str | None = None) -> Plan:
    """Everything `up` needs, fully resolved and checked; raises InputError and creates nothing.

    The topology's own passes (labkit.topology.plan), then its `expect:` checks, then for a
    cluster its workloads: loaded once, pods placed and Services allocated once, kept in the plan.
    """
    topo, doc = load_topology(path, name)
    plan, problems = build_plan(topo, str(path), runtime)
    expects, expect_faults = expect_problems(doc.data.get("expect"))
    if problems or expect_faults:
        found = [Problem(doc.file, doc.line_of(p.path), _dotted(p.path), p.text) for p in problems]
        found += [Problem(doc.file, doc.line_of(p.path), p.dotted, p.message) for p in expect_faults]
        raise InputError(_by_line(found))
    assert plan is not None
    plan = dataclasses.replace(plan, expects=tuple(expects))
    if plan.cluster is not None:
        from labkit.topology.workloads import plan_workloads  # only clusters pay for manifest parsing

        plan = plan_workloads(plan, doc)
    return plan


_dotted = dotted


def _by_line(problems: list[Problem]) -> list[Problem]:
    """Top to bottom, as the reader goes through the file (stable: same line keeps its order)."""
    return sorted(problems, key=lambda p: p.line or 0)

# pydantic's wording -> what a topology author needs to read (the value found is appended).
_IP_EXAMPLES = {
    "ip_v4_address": ("an IPv4 address", "10.0.0.1", ipaddress.IPv4Address),
    "ip_v4_interface": ("an IPv4 address with prefix length", "10.0.0.1/24", ipaddress.IPv4Interface),
    "ip_v4_network": ("an IPv4 network", "10.0.0.0/24", ipaddress.IPv4Network),
    "ip_v6_address": ("an IPv6 address", "fd00::1", ipaddress.IPv6Address),
    "ip_v6_interface": ("an IPv6 address with prefix length", "fd00::1/64", ipaddress.IPv6Interface),
    "ip_v6_network": ("an IPv6 network", "fd00::/64", ipaddress.IPv6Network),
}
_TYPE_WORDS = {
    "dict_type": "should be a mapping (key: value)",
    "model_type": "should be a mapping (key: value)",
    "model_attributes_type": "should be a mapping (key: value)",
    "list_type": "should be a list",
    "string_type": "should be a string",
    "int_type": "should be an integer",
    "int_parsing": "should be an integer",
    "int_from_float": "should be an integer",
    "bool_type": "should be true or false",
    "bool_parsing": "should be true or false",
}


def _problem(doc: Document, err: dict) -> Problem:
    loc = tuple(err["loc"])
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    shown = "" if isinstance(value, (dict, list)) else f" (got {value!r})"
    if loc[-1:] == ("[key]",):  # a mapping key of the wrong type, e.g. a node named 1
        loc = loc[:-1]
        message = f"this key must be a string{shown}; quote it"
    elif kind == "extra_forbidden":
        valid = _valid_keys(loc[:-1])
        close = _close_key(err)
        message = "unknown key" + (f" (did you mean {close!r}?)" if close else "")
        message += f"; valid keys: {', '.join(valid)}" if valid else ""
    elif kind == "missing":
        message = "required key is missing" + (f", e.g. {_EXAMPLES[loc[-1]]}" if loc[-1] in _EXAMPLES else "")
    elif kind in _IP_EXAMPLES:
        what, example, parse = _IP_EXAMPLES[kind]
        try:
            parse(value)
            reason = ""
        except (ValueError, TypeError) as exc:
            reason = f": {exc}"
        message = f"{value!r} is not {what} like {example}{reason}"
    elif kind in ("too_short", "too_long") and "actual_length" in ctx:
        bound = f"at least {ctx['min_length']}" if kind == "too_short" else f"at most {ctx['max_length']}"
        message = f"needs {bound} item(s), got {ctx['actual_length']}"
    elif kind in _TYPE_WORDS:
        message = _TYPE_WORDS[kind] + shown
    else:
        message = err["msg"].removeprefix("Value error, ").removeprefix("Input ")
        if kind not in ("value_error",):
            message += shown
    return Problem(doc.file, doc.line_of(loc), _dotted(loc), message)


# what a missing required key looks like when given
_EXAMPLES = {
    "name": "'name: lab1' (1-12 lowercase letters, digits or '-')",
    "topology": "'topology: {nodes: {h1: {kind: linux}}}'",
    "nodes": "'nodes: {h1: {kind: linux}}'",
    "node": "'node: h1'",
    "interface": "'interface: eth1'",
    "endpoints": "'endpoints: [\"h1:eth1\", \"h2:eth1\"]'",
    "dst": "'dst: 10.0.2.0/24' or 'dst: default'",
}

_UNION_TAGS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
               "dict[str,any]": "a mapping"}


def _merge_union_errors(errors: list[dict]) -> list[dict]:
    """A value matching no member of `str | int` gets one error per member, each with the
    member's name appended to its location (`sysctls.x.str`, `sysctls.x.int`): make it one."""
    groups: dict[tuple, list[dict]] = {}
    for err in errors:
        loc = tuple(err["loc"])
        if loc and loc[-1] in _UNION_TAGS:
            groups.setdefault(loc[:-1], []).append(err)
    merged, done = [], set()
    for err in errors:
        loc = tuple(err["loc"])
        members = groups.get(loc[:-1], []) if loc and loc[-1] in _UNION_TAGS else []
        if len(members) < 2:
            merged.append(err)
        elif loc[:-1] not in done:
            done.add(loc[:-1])
            words = [_UNION_TAGS[m["loc"][-1]] for m in members]
            if "a number" in words and "an integer" in words:
                words.remove("an integer")
            wanted = " or ".join(words) if len(words) < 3 else ", ".join(words[:-1]) + " or " + words[-1]
            merged.append({**err, "loc": loc[:-1], "type": "value_error", "msg": f"should be {wanted}"
                           + ("" if isinstance(err.get("input"), (dict, list)) else f" (got {err.get('input')!r})")})
    return merged


def _close_key(err: dict) -> str | None:
    """For an unknown key, the valid key it is most likely a typo of."""
    loc = tuple(err["loc"])
    # 0.75: close enough to be a typo (sysctl -> sysctls), not a different word (volumes -> routes)
    close = difflib.get_close_matches(str(loc[-1]), _valid_keys(loc[:-1]), n=1, cutoff=0.75)
    return close[0] if close else None


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
