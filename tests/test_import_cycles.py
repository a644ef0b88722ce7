"""No import cycles among civicmeter's modules (the server in services/, the light distributions
in sdk/): read from the source, so a cycle is found whatever order a process imports in.

An edge is an import a module makes when it is loaded, at its top level (under `if
TYPE_CHECKING:` or a `try:` too: a cycle there is one a refactoring turns into an import error);
imports inside functions are deliberate late imports and are left out. Importing a submodule
runs its package's __init__ first, but that is not counted as an edge: a package re-exporting
its modules' names would otherwise be a cycle with each of them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = [REPO / "services", REPO / "sdk" / "api", REPO / "sdk" / "client", REPO / "sdk" / "gateway"]


def modules() -> dict[str, Path]:
    """Every civicmeter module of the repository, by dotted name."""
    found: dict[str, Path] = {}
    for root in ROOTS:
        for path in sorted((root / "civicmeter").rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if "build" in parts or any(p.startswith(".") for p in parts):
                continue
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _top_level(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            yield from _top_level(node.body)
            yield from _top_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _top_level(block)
            for handler in node.handlers:
                yield from _top_level(handler.body)


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The civicmeter modules `name` imports when it is loaded."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _top_level(ast.parse(path.read_text(encoding="utf-8")).body):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from a import b` loads a.b when b is a module, else takes a name from a.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a name in a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_civicmeter_modules_import_no_cycle() -> None:
    known = modules()
    assert len(known) > 100, "the modules of services/ and sdk/ were not found"
    graph = {name: imports(name, path, known) for name, path in known.items()}
    assert cycles(graph) == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ],
)
def test_the_cycle_finder_finds_cycles(
    graph: dict[str, set[str]], expected: list[list[str]]
) -> None:
    assert cycles(graph) == expected


def test_the_edges_include_type_checking_and_relative_imports(tmp_path: Path) -> None:
    """The cycle this test was written for: context.py imported activity.py's UserActivity
    under TYPE_CHECKING while activity.py imported context.py."""
    package = tmp_path / "civicmeter" / "detection"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "activity.py").write_text("from civicmeter.detection.context import EventContext\n")
    (package / "context.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import alert\n"
        "if TYPE_CHECKING:\n"
        "    from .activity import UserActivity\n"
        "def late() -> None:\n"
        "    from civicmeter.detection import activity\n"
    )
    (package / "alert.py").write_text("import civicmeter.detection.context\n")
    known = {
        f"civicmeter.detection.{p.stem}" if p.stem != "__init__" else "civicmeter.detection": p
        for p in package.glob("*.py")
    }
    graph = {name: imports(name, path, known) for name, path in known.items()}
    assert graph["civicmeter.detection.context"] == {
        "civicmeter.detection.alert",
        "civicmeter.detection.activity",
    }
    assert cycles(graph) == [
        [
            "civicmeter.detection.activity",
            "civicmeter.detection.alert",
            "civicmeter.detection.context",
        ]
    ]
