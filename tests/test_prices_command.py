"""`civicmeter prices check FILE...`: what a person runs before publishing a price change."""

from pathlib import Path

import pytest

from civicmeter.__main__ import main

REPO = Path(__file__).resolve().parents[1]


def check(*files: Path) -> int:
    with pytest.raises(SystemExit) as stopped:
        main(["prices", "check", *map(str, files)])
    code = stopped.value.code
    assert isinstance(code, int)
    return code


def test_a_good_catalog_is_described_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    shipped = REPO / "config" / "prices.yaml"
    assert check(shipped) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{shipped}: ok: 3 version(s) 2024-01 .. 2025-02")
    assert f"FX from {REPO / 'config' / 'fx.yaml'}" in out


def test_each_bad_file_is_named_with_its_line_and_the_exit_is_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shipped = (REPO / "config" / "prices.yaml").read_text(encoding="utf-8")
    (tmp_path / "fx.yaml").write_text(
        (REPO / "config" / "fx.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    bad = tmp_path / "prices.yaml"
    bad.write_text(shipped.replace('price: "29000"}', "price: 29000}", 1), encoding="utf-8")
    line = 1 + shipped.split('price: "29000"}', 1)[0].count("\n")
    assert check(REPO / "config" / "prices.yaml", bad) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{REPO / 'config' / 'prices.yaml'}: ok:")
    assert captured.err == (
        f"{bad}:{line}: versions[0].prices[0].price: must be a quoted decimal string, "
        'e.g. "0.0035"\n'
    )
