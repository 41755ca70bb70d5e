"""Which fields of a manifest labkit accepts but does not act on. Pure.

Every model lists them (`_ignored`: dropped unread; `_unused`: checked, not acted on); this walks
a manifest beside its model and reports those that are set to something, so `validate` and `up`
can say, once per field, what of a file has no effect in the lab. Empty values (`resources: {}`,
`strategy: {}`, what `kubectl create --dry-run=client -o yaml` writes) and what the API server
itself writes (`status`, `creationTimestamp`, `uid` ...) are not worth a note.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from pydantic import BaseModel

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class UnusedField:
    """One field set in a manifest that labkit accepts and leaves without effect."""

    kind: str
    path: Loc  # inside the object, as in the YAML: ("spec", "template", "spec", "containers", 0, "resources")

    @property
    def pattern(self) -> str:
        """The field's path with list positions left out: one note for every container's `resources`."""
        text = ""
        for part in self.path:
            text += "[]" if isinstance(part, int) else (f".{part}" if text else str(part))
        return text


def unused_fields(model: type[BaseModel], data: object, kind: str, path: Loc = ()) -> Iterator[UnusedField]:
    """Every field under `data` (validated as `model`) that labkit does not act on and that is set."""
    if not isinstance(data, Mapping):
        return
    quiet = getattr(model, "_bookkeeping", frozenset())
    not_acted = getattr(model, "_ignored", frozenset()) | getattr(model, "_unused", frozenset())
    fields = {f.alias or name: f for name, f in model.model_fields.items()}
    for key, value in data.items():
        if not isinstance(key, str) or _empty(value):
            continue
        if key in not_acted:
            if key not in quiet:
                yield UnusedField(kind, (*path, key))
            continue
        field = fields.get(key)
        if field is None:
            continue
        inner = _model_of(field.annotation)
        if inner is None:
            continue
        if isinstance(value, list):
            for i, item in enumerate(value):
                yield from unused_fields(inner, item, kind, (*path, key, i))
        else:
            yield from unused_fields(inner, value, kind, (*path, key))


def _empty(value: object) -> bool:
    return value is None or value == {} or value == [] or value is False


def _model_of(annotation: object) -> type[BaseModel] | None:
    """The model a field holds (itself, in a tuple, or optional), if it holds one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (tuple, list, typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None
