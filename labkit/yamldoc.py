"""Read YAML while keeping the line of every mapping key and sequence item.

The plan layer's one reader of files people wrote: topology files and Kubernetes manifests
both come through here, so both get the same size, alias and depth limits.

Error messages must name the line a problem sits on, so the loader returns
plain dicts and lists whose positions are kept beside them (`LineMap`).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from labkit.errors import InputError, Problem

Path_ = tuple[str | int, ...]
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")

# Input limits: a topology or manifest file is a few KiB; these only stop what is not one.
MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64  # nested mappings and lists
_CLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 10x faster


class UnreadableFile(InputError):
    """A file that could not be read at all (missing, not a regular file, too large, not UTF-8):
    the caller that named it (a topology's `workloads:`) may point at where it was named."""

    def __init__(self, file: str, message: str):
        self.file, self.reason = file, message
        super().__init__(Problem(file, None, "", message))


class _Lined(dict):
    """A mapping that remembers the line of each key (1-based)."""

    lines: dict[Any, int]
    line: int


class _LinedList(list):
    lines: list[int]
    line: int


class _LineLoader(_CLoader):
    def construct_mapping(self, node, deep=False):
        mapping = _Lined(super().construct_mapping(node, deep=True))
        mapping.lines = {self.construct_object(k, deep=True): k.start_mark.line + 1 for k, _ in node.value}
        mapping.line = node.start_mark.line + 1
        return mapping

    def construct_sequence(self, node, deep=False):
        seq = _LinedList(super().construct_sequence(node, deep=True))
        seq.lines = [item.start_mark.line + 1 for item in node.value]
        seq.line = node.start_mark.line + 1
        return seq

    def construct_yaml_map(self, node):
        yield self.construct_mapping(node, deep=True)

    def construct_yaml_seq(self, node):
        yield self.construct_sequence(node, deep=True)


_LineLoader.add_constructor("tag:yaml.org,2002:map", _LineLoader.construct_yaml_map)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _LineLoader.construct_yaml_seq)


def dotted(path: Path_) -> str:
    """`("topology", "links", 0, "ipv4")` -> `topology.links[0].ipv4`; odd keys are quoted."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not _PLAIN_KEY.match(str(part)):
            text += f"[{str(part)!r}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _reject_duplicate_keys(node: yaml.MappingNode, file: str, path: Path_) -> None:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        key = key_node.value
        line = key_node.start_mark.line + 1
        if key in seen:
            raise InputError(Problem(
                file, line, dotted(path + (key,)),
                f"duplicate key (first defined on line {seen[key]}); a key may appear only once in a mapping",
            ))
        seen[key] = line


@dataclass
class Document:
    """One YAML document: its data and where each part of it came from."""

    file: str
    data: Any
    root_line: int = 1

    def line_of(self, path: Path_) -> int | None:
        """The line of the deepest part of `path` that exists in the document."""
        node: Any = self.data
        line = getattr(node, "line", self.root_line)
        for part in path:
            if isinstance(node, _Lined) and part in node:
                line = node.lines.get(part, line)
                node = node[part]
            elif isinstance(node, _LinedList) and isinstance(part, int) and 0 <= part < len(node):
                line = node.lines[part]
                node = node[part]
            else:
                break
        return line


def _walk_for_duplicates(node: yaml.Node, file: str, path: Path_ = ()) -> None:
    if isinstance(node, yaml.MappingNode):
        _reject_duplicate_keys(node, file, path)
        for key, value in node.value:
            _walk_for_duplicates(value, file, path + (key.value if isinstance(key, yaml.ScalarNode) else "?",))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk_for_duplicates(item, file, path + (i,))


def _check_events(text: str, file: str) -> None:
    """Refuse YAML anchors and aliases, and nesting deeper than MAX_DEPTH, before anything is built.

    Aliases expand: 326 bytes of nested ones are billions of nodes ("billion laughs"), and one
    that refers to itself is a loop. A topology or a manifest never needs them.
    """
    depth = 0
    for event in yaml.parse(text, Loader=_CLoader):
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            raise InputError(Problem(file, line, "", f"YAML alias '*{event.anchor}' is not accepted: "
                                                     "labkit does not expand anchors and aliases; "
                                                     "write the value out where it is used"))
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise InputError(Problem(file, line, "", f"YAML anchor '&{anchor}' is not accepted: "
                                                     "labkit does not expand anchors and aliases; "
                                                     "write the value out where it is used"))
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise InputError(Problem(file, line, "", f"nested more than {MAX_DEPTH} levels deep; "
                                                         "a topology or manifest is never that deep"))
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def parse_documents(text: str, file: str) -> list[Document]:
    """Parse every YAML document in `text`; syntax errors become an InputError."""
    try:
        _check_events(text, file)
        nodes = list(yaml.compose_all(text, Loader=_CLoader))
        for node in nodes:
            if node is not None:
                _walk_for_duplicates(node, file)
        docs = []
        loader = _LineLoader(text)
        try:
            while loader.check_data():
                data = loader.get_data()
                if data is not None:
                    docs.append(Document(file, data, getattr(data, "line", 1)))
        finally:
            loader.dispose()
        return docs
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        what = exc.problem or exc.context or "invalid YAML"
        if mark and _char_at(text, mark.line, mark.column) == "\t":
            what += " (a tab: YAML indents with spaces only)"
        if exc.problem and exc.context and exc.context_mark and exc.context_mark.line + 1 != line:
            # e.g. a '{' never closed: the parser notices lines later; name where it began
            what += f" ({exc.context} that starts on line {exc.context_mark.line + 1})"
        raise InputError(Problem(file, line, "", f"YAML syntax error: {what}")) from None
    except yaml.YAMLError as exc:
        raise InputError(Problem(file, None, "", f"YAML syntax error: {exc}")) from None
    except ValueError as exc:  # a scalar Python will not hold, e.g. an integer of more than 4300 digits
        raise InputError(Problem(file, None, "", f"unreadable value: {str(exc).split(';')[0]}")) from None


def _char_at(text: str, line: int, column: int) -> str:
    lines = text.splitlines()
    return lines[line][column:column + 1] if 0 <= line < len(lines) else ""


_FILE_TYPES = ((stat.S_ISDIR, "is a directory; give the path of a YAML file"),
               (stat.S_ISFIFO, "is a named pipe (FIFO), not a regular file; give the path of a YAML file"),
               (stat.S_ISCHR, "is a device, not a regular file; give the path of a YAML file"),
               (stat.S_ISBLK, "is a device, not a regular file; give the path of a YAML file"),
               (stat.S_ISSOCK, "is a socket, not a regular file; give the path of a YAML file"))


def read_text(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> str:
    """A regular file's text, at most `max_bytes`; UnreadableFile (at once, never a hang) otherwise."""
    file = str(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below by its type
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UnreadableFile(file, "no such file") from None
    except IsADirectoryError:
        raise UnreadableFile(file, "is a directory; give the path of a YAML file") from None
    except OSError as exc:
        raise UnreadableFile(file, f"cannot read: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            why = next((text for test, text in _FILE_TYPES if test(info.st_mode)), "is not a regular file")
            raise UnreadableFile(file, why)
        if info.st_size > max_bytes:
            raise UnreadableFile(file, f"is {info.st_size} bytes; files larger than {max_bytes} bytes "
                                       f"({max_bytes // (1024 * 1024)} MiB) are not read")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:  # it grew while being read
            raise UnreadableFile(file, f"is larger than {max_bytes} bytes; files that large are not read")
    except OSError as exc:
        if exc.errno == errno.EISDIR:
            raise UnreadableFile(file, "is a directory; give the path of a YAML file") from None
        raise UnreadableFile(file, f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(file, f"is not UTF-8 text (byte {exc.object[exc.start]:#04x} "
                                   f"at offset {exc.start}); expected a YAML file") from None


def read_documents(path: str | Path) -> list[Document]:
    """Read a (possibly multi-document) YAML file."""
    return parse_documents(read_text(path), str(path))


def read_document(path: str | Path) -> Document:
    """Read a single-document YAML file whose top level must be a mapping."""
    return _single(read_documents(path), str(path))


def _single(docs: list[Document], path: str) -> Document:
    if len(docs) != 1 or not isinstance(docs[0].data, dict):
        if not docs:
            found = "the file is empty"
        elif len(docs) > 1:
            found = f"found {len(docs)} documents"
        else:
            found = f"found a {_yaml_kind(docs[0].data)}"
        line = docs[1].root_line if len(docs) > 1 else 1
        raise InputError(Problem(str(path), line, "", f"expected one YAML document holding a mapping "
                                                      f"(name:, topology:, ...); {found}"))
    return docs[0]


def _yaml_kind(data: Any) -> str:
    return "list" if isinstance(data, list) else "mapping" if isinstance(data, dict) else "scalar"


# ---------------------------------------------------------------- environment variables, as containerlab expands them

# `$VAR`, `${VAR}`, `${VAR:=default}`, `${VAR:-default}`, `${VAR=default}`, `${VAR-default}`; an unset
# variable without a default is left as written (containerlab's envsubst: "restricted, no replace").
_ENV_REF = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[=-])(?P<default>[^}\n]*))?\}"
                      r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")
MAX_ENV_VALUE = 64 * 1024


def expand_env(text: str, file: str, environ: dict[str, str] | None = None) -> str:
    """Expand environment variables anywhere in `text`, before it is parsed, line by line so every
    line keeps its number: a value holding a line break is refused, not spliced in. Bounded: a
    value of at most MAX_ENV_VALUE characters, a result of at most MAX_FILE_BYTES."""
    env = os.environ if environ is None else environ
    out, size = [], 0
    for number, line in enumerate(text.split("\n"), 1):
        def value(match: re.Match, number: int = number) -> str:
            name = match.group("braced") or match.group("plain")
            found = env.get(name)
            op = match.group("op")
            if op is not None and (found is None or (op.startswith(":") and found == "")):
                found = match.group("default")
            if found is None:
                return match.group(0)
            if "\n" in found or "\r" in found or len(found) > MAX_ENV_VALUE:
                why = "holds a line break" if len(found) <= MAX_ENV_VALUE else f"is longer than {MAX_ENV_VALUE}"
                raise InputError(Problem(file, number, "", f"environment variable {name} {why}; "
                                                           "a value expanded into a topology stays on its line"))
            return found

        line = _ENV_REF.sub(value, line) if "$" in line else line
        size += len(line) + 1
        if size > MAX_FILE_BYTES:
            raise InputError(Problem(file, number, "", f"with its environment variables expanded the file is "
                                                       f"larger than {MAX_FILE_BYTES} bytes"))
        out.append(line)
    return "\n".join(out)


def read_expanded_document(path: str | Path) -> Document:
    """A topology file: read, environment variables expanded (containerlab's way), then parsed."""
    file = str(path)
    docs = parse_documents(expand_env(read_text(path), file), file)
    return _single(docs, file)
