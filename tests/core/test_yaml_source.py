import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from civicmeter.policy.yaml_source import (
    At,
    LocatedList,
    LocatedMap,
    SourceError,
    SourceFile,
    load_yaml,
    parse_yaml,
)

TEXT = """\
# a comment
name: prices
items:
  - {a: 1, b: "two"}
  - plain
nested:
  deep:
    value: 3
"""


def test_values_remember_their_lines() -> None:
    doc = parse_yaml(TEXT, "f.yaml", SourceError)
    assert isinstance(doc, LocatedMap) and doc.line == 2
    assert doc.value_lines == {"name": 2, "items": 4, "nested": 7}
    items = doc["items"]
    assert isinstance(items, LocatedList) and items.item_lines == [4, 5]
    assert doc["nested"]["deep"].value_lines == {"value": 8}
    assert doc == {"name": "prices", "items": [{"a": 1, "b": "two"}, "plain"],
                   "nested": {"deep": {"value": 3}}}  # fmt: skip


def test_at_names_the_path_and_line_of_a_value() -> None:
    doc = parse_yaml(TEXT, "f.yaml", SourceError)
    root = At("f.yaml", SourceError)
    at = root.key(doc, "items").item(doc["items"], 0).key(doc["items"][0], "b")
    with pytest.raises(SourceError) as caught:
        at.fail("must be a number")
    assert str(caught.value) == "f.yaml:4: items[0].b: must be a number"
    error = caught.value
    assert (error.source, error.line, error.path, error.reason) == (
        "f.yaml",
        4,
        "items[0].b",
        "must be a number",
    )


def test_documents_built_in_code_are_walked_without_lines() -> None:
    doc = {"items": [{"b": 2}]}
    at = At("in-code", SourceError).key(doc, "items").item(doc["items"], 0).key({}, "b")
    with pytest.raises(SourceError, match=r"^in-code: items\[0\]\.b: bad$"):
        at.fail("bad")


def test_a_key_given_twice_is_an_error_not_a_silent_override() -> None:
    with pytest.raises(SourceError) as caught:
        parse_yaml("a:\n  b: 1\n  c: 2\n  b: 3\n", "f.yaml", SourceError)
    assert str(caught.value) == "f.yaml:4: a.b: the key is given twice (first on line 2)"


def test_merge_keys_are_expanded() -> None:
    doc = parse_yaml("base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n", "f.yaml", SourceError)
    assert doc["other"] == {"x": 1, "y": 2}


def test_unknown_keys_are_named_at_their_line() -> None:
    doc = parse_yaml("a: 1\nb: 2\n", "f.yaml", SourceError)
    with pytest.raises(SourceError, match=r"^f.yaml:2: b: unknown key 'b'; expected one of a$"):
        At("f.yaml", SourceError).mapping(doc, ("a",))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: [1, 2\n", "f.yaml:2: not valid YAML"),
        ("a: 2025-13-01\n", "f.yaml:1: a: '2025-13-01' is not valid"),
        ("a:\n  ? [1]\n  : 2\n", "f.yaml:2: a: a key must be a plain value"),
    ],
)
def test_malformed_yaml_names_the_line(text: str, expected: str) -> None:
    with pytest.raises(SourceError) as caught:
        parse_yaml(text, "f.yaml", SourceError)
    assert str(caught.value).startswith(expected)


@given(
    st.text(alphabet=st.sampled_from(list("ab:-[]{},'\"&*!?|>#%@ \n\t0123456789.")), max_size=80)
)
def test_any_text_gives_a_document_or_a_source_error(text: str) -> None:
    try:
        parse_yaml(text, "f.yaml", SourceError)
    except SourceError as exc:
        assert str(exc).startswith("f.yaml")


def test_a_file_is_changed_when_rewritten_replaced_or_removed(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text("a: 1\n", encoding="utf-8")
    doc, file = load_yaml(path, SourceError)
    assert doc == {"a": 1} and not file.changed()
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert file.changed()
    replaced = tmp_path / "new.yaml"
    replaced.write_text("a: 2\n", encoding="utf-8")
    file = SourceFile.of(path)
    replaced.replace(path)  # how editors and Kubernetes ConfigMaps swap files
    assert file.changed()
    file = SourceFile.of(path)
    path.unlink()
    assert file.changed()
    assert SourceFile.of(path).stamp is None


def test_an_unreadable_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"missing\.yaml: cannot read the file") as caught:
        load_yaml(tmp_path / "missing.yaml", SourceError)
    assert [f.path.name for f in caught.value.files] == ["missing.yaml"]
