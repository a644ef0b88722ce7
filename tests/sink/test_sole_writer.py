"""The sink is the only writer of usage_events and the alert tables.

Two checks over the source of every package: no statement outside the sink writes those tables
(INSERT INTO, a client insert, ALTER/TRUNCATE/DELETE naming them), and no module outside the
sink imports the sink. The migrations (core.store.migrations) may ALTER those tables, which
changes their schema, not their rows; their inserts count like any other. The scan is shown to
find the sink's own writes, so it cannot pass by finding nothing.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import civicmeter

# civicmeter is a namespace package: the server (services/) and the light distributions (sdk/).
PORTIONS = [Path(p).resolve() for p in civicmeter.__path__]
PACKAGE = next(p for p in PORTIONS if (p / "sink").is_dir())
SINK = PACKAGE / "sink"
# The ledger, and the staging and journal tables its crash-safe write goes through.
LEDGER_TABLES = {"usage_events", "usage_staged", "usage_write_journal"}
ALERT_TABLES = {"alerts_opened", "alert_occurrences"}
SOLE_WRITER_TABLES = LEDGER_TABLES | ALERT_TABLES
MIGRATIONS = PACKAGE / "core" / "store" / "migrations"
_ROW_WRITES = [
    re.compile(r"INSERT\s+INTO\s+[`{]?(\w+)", re.IGNORECASE),
    re.compile(r"\.(?:insert|raw_insert|insert_df|insert_arrow)\(\s*[\"']?(\w+)"),
    re.compile(r"insert_from_protobuf\(\s*\w+,\s*f?[\"']\{?(?:\w+\.)?(\w+)"),
    re.compile(r"(?:TRUNCATE\s+TABLE|DELETE\s+FROM)\s+[`{]?(\w+)", re.IGNORECASE),
]
_ALTER = re.compile(r"ALTER\s+TABLE\s+[`{]?(\w+)", re.IGNORECASE)


def modules() -> list[Path]:
    """The hand-written modules of every package (generated protobuf code left out)."""
    return sorted(
        p
        for portion in PORTIONS
        for p in portion.rglob("*.py")
        if not p.name.endswith(("_pb2.py", "_pb2_grpc.py"))
    )


def _name(path: Path) -> str:
    portion = next(p for p in PORTIONS if p in path.parents)
    return str(path.relative_to(portion))


def written_tables(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    constants = {k: v for p in modules() for k, v in _string_constants(p).items()}
    found: set[str] = set()
    schema_history = MIGRATIONS in path.parents
    for pattern in _ROW_WRITES if schema_history else [*_ROW_WRITES, _ALTER]:
        for match in pattern.finditer(text):
            found.add(constants.get(match.group(1), match.group(1)))
    return found


@functools.cache
def _string_constants(path: Path) -> dict[str, str]:
    """Module-level NAME = "table" constants, so a write through a named table counts too."""
    out: dict[str, str] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                    out[target.id] = node.value.value
    return out


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_scan_finds_the_sinks_own_writes() -> None:
    by_sink = set().union(*(written_tables(p) for p in SINK.glob("*.py")))
    assert by_sink >= SOLE_WRITER_TABLES


def test_no_module_outside_the_sink_writes_usage_events_or_the_alert_tables() -> None:
    outside = [p for p in modules() if SINK not in p.parents]
    assert any(p.parent.name == "billing" for p in outside)  # the services are scanned
    assert any(MIGRATIONS in p.parents for p in outside)  # and the migrations written in Python
    offenders = {_name(p): sorted(written_tables(p) & SOLE_WRITER_TABLES) for p in outside}
    assert {name: tables for name, tables in offenders.items() if tables} == {}


def test_no_module_outside_the_sink_imports_it() -> None:
    """The command line that starts each service (__main__) aside."""
    offenders = {
        _name(p): sorted(
            n for n in imported(p) if n == "civicmeter.sink" or n.startswith("civicmeter.sink.")
        )
        for p in modules()
        if SINK not in p.parents and p != PACKAGE / "__main__.py"
    }
    assert {name: found for name, found in offenders.items() if found} == {}
