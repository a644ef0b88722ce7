"""YAML configuration files read with the line of every value, so that errors can name it.

`load_yaml` gives plain dicts, lists and scalars (as PyYAML's safe loader makes them), except
that mappings and sequences are `LocatedMap` and `LocatedList`, which remember the line of
each of their values. A key given twice in one mapping is an error here, where PyYAML would
silently keep the last one. `At` walks such a document by path (`versions[1].prices[3].price`)
and raises errors of the form

    config/prices.yaml:42: versions[1].prices[3].price: must be a quoted decimal string

Documents built in code (plain dicts and lists) are walked the same way, without lines.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NoReturn

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SourceError(ValueError):
    """A configuration file is malformed: the file, the line, the path to the value, the reason."""

    def __init__(self, source: str, line: int | None, path: str, reason: str) -> None:
        self.source = source
        self.line = line
        self.path = path
        self.reason = reason
        self.files: tuple[SourceFile, ...] = ()  # the files read, set by the loader that failed
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {path}: {reason}" if path else f"{where}: {reason}")


class LocatedMap(dict[Any, Any]):
    """A YAML mapping with the line of the mapping and of each key and value."""

    def __init__(self, line: int | None = None) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[Any, int] = {}
        self.value_lines: dict[Any, int] = {}


class LocatedList(list[Any]):
    """A YAML sequence with the line of the sequence and of each item."""

    def __init__(self, line: int | None = None) -> None:
        super().__init__()
        self.line = line
        self.item_lines: list[int] = []


@dataclass(frozen=True)
class SourceFile:
    """A file as it was when read: changed() tells whether it has been replaced or edited since.

    The stamp is taken before the file is read, so an edit that lands while it is being read
    shows up as a change at the next look.
    """

    path: Path
    stamp: tuple[int, int, int] | None  # (mtime_ns, size, inode); None: the file was missing

    @classmethod
    def of(cls, path: Path) -> SourceFile:
        return cls(path, _stamp(path))

    def changed(self) -> bool:
        return _stamp(self.path) != self.stamp


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        # stat follows symbolic links: a Kubernetes ConfigMap update swaps the link's target.
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_mtime_ns, status.st_size, status.st_ino)


@dataclass(frozen=True)
class At:
    """Where a value sits: its file, its line if known, and its path from the document root."""

    source: str
    error: type[SourceError]
    path: str = ""
    line: int | None = None

    def key(self, mapping: Any, name: Any) -> At:
        """The place of `mapping[name]` (or of the mapping itself, if the key is missing).

        Keys need not be strings (YAML reads dates and numbers as such); the path shows them
        as written."""
        line = self.line
        if isinstance(mapping, LocatedMap):
            line = mapping.value_lines.get(name, mapping.line)
        return At(self.source, self.error, f"{self.path}.{name}" if self.path else name, line)

    def label(self, mapping: Any, name: Any) -> At:
        """The place of the key `name` itself (for keys that are names, like currency codes)."""
        line = self.line
        if isinstance(mapping, LocatedMap):
            line = mapping.key_lines.get(name, mapping.line)
        return At(self.source, self.error, f"{self.path}.{name}" if self.path else name, line)

    def on_line_of(self, mapping: Any, name: Any) -> At:
        """This place, on the line of the key `name` (a complaint about the mapping's keys)."""
        if isinstance(mapping, LocatedMap) and name in mapping.key_lines:
            return At(self.source, self.error, self.path, mapping.key_lines[name])
        return self

    def item(self, sequence: Any, index: int) -> At:
        line = self.line
        if isinstance(sequence, LocatedList) and index < len(sequence.item_lines):
            line = sequence.item_lines[index]
        return At(self.source, self.error, f"{self.path}[{index}]", line)

    def fail(self, reason: str) -> NoReturn:
        raise self.error(self.source, self.line, self.path, reason)

    def decimal(self, value: Any, example: str) -> Decimal:
        """A quoted decimal string as a finite Decimal."""
        if not isinstance(value, str):
            # A YAML float would already have lost precision: money is quoted decimal strings.
            self.fail(f'must be a quoted decimal string, e.g. "{example}"')
        try:
            number = Decimal(value)
        except InvalidOperation:
            self.fail(f"{value!r} is not a decimal number")
        if not number.is_finite():
            self.fail("must be a finite number")
        return number

    def mapping(self, value: Any, allowed: tuple[str, ...]) -> dict[Any, Any]:
        """`value` as a mapping whose keys are all in `allowed`; an unknown key is named."""
        if not isinstance(value, dict):
            self.fail("must be a mapping")
        for key in value:
            if key not in allowed:
                self.label(value, str(key)).fail(
                    f"unknown key {key!r}; expected one of {', '.join(allowed)}"
                )
        return value


def load_yaml(path: Path, error: type[SourceError]) -> tuple[Any, SourceFile]:
    """The document in `path`, with lines, and the file as read; errors name file and line."""
    file = SourceFile.of(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        failure = error(str(path), None, "", f"cannot read the file: {exc}")
        failure.files = (file,)
        raise failure from None
    try:
        return parse_yaml(text, str(path), error), file
    except SourceError as exc:
        exc.files = (file,)
        raise


def parse_yaml(text: str, source: str, error: type[SourceError]) -> Any:
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise error(source, line, "", f"not valid YAML: {reason}") from None
    except yaml.YAMLError as exc:
        raise error(source, None, "", f"not valid YAML: {exc}") from None
    if node is None:
        return None
    return _Converter(source, error).value(node, "")


class _Converter:
    def __init__(self, source: str, error: type[SourceError]) -> None:
        self.source = source
        self.error = error
        self.scalars = SafeConstructor()

    def value(self, node: Node, path: str) -> Any:
        if isinstance(node, MappingNode):
            return self.mapping(node, path)
        if isinstance(node, SequenceNode):
            items = LocatedList(node.start_mark.line + 1)
            for index, child in enumerate(node.value):
                items.append(self.value(child, f"{path}[{index}]"))
                items.item_lines.append(child.start_mark.line + 1)
            return items
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        raise self.error(self.source, node.start_mark.line + 1, path, "unsupported YAML node")

    def scalar(self, node: ScalarNode, path: str) -> Any:
        try:
            return self.scalars.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            # e.g. 2025-13-01, which YAML reads as a date that does not exist
            raise self.error(
                self.source, node.start_mark.line + 1, path, f"{node.value!r} is not valid: {exc}"
            ) from None

    def mapping(self, node: MappingNode, path: str) -> LocatedMap:
        self.scalars.flatten_mapping(node)  # YAML merge keys (<<: *defaults)
        result = LocatedMap(node.start_mark.line + 1)
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                raise self.error(self.source, line, path, "a key must be a plain value")
            key = self.scalar(key_node, path)
            where = f"{path}.{key}" if path else str(key)
            if key in result:
                raise self.error(
                    self.source,
                    line,
                    where,
                    f"the key is given twice (first on line {result.key_lines[key]})",
                )
            result[key] = self.value(value_node, where)
            result.key_lines[key] = line
            result.value_lines[key] = value_node.start_mark.line + 1
        return result
