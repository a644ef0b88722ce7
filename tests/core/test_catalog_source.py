import logging
import os
import textwrap
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.pricing import CatalogError
from civicmeter.core.pricing.catalog_source import CatalogSource
from tests.factories import PRICES_YAML, event


def kst(text: str) -> datetime:
    return datetime.fromisoformat(f"{text}+09:00")


FX_BLOCK = PRICES_YAML[PRICES_YAML.index("fx:") : PRICES_YAML.index("versions:")]
API_CALL = event(
    event_time=kst("2025-01-20T10:00:00"),
    organization_id="busan",
    usage=pb.Usage(input_tokens=1_000_000),
)


def write(path: Path, text: str) -> None:
    """Write and move the modification time on, as a later edit would (whatever the clock)."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    stat = path.stat()
    if stat.st_mtime_ns <= before:
        os.utime(path, ns=(stat.st_atime_ns, before + 1_000_000))


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    prices, fx = tmp_path / "prices.yaml", tmp_path / "fx.yaml"
    write(fx, textwrap.dedent(FX_BLOCK.removeprefix("fx:\n")))
    write(prices, PRICES_YAML.replace(FX_BLOCK, "fx_file: fx.yaml\n"))
    return prices, fx


def gpt4o_input(source: CatalogSource) -> Decimal:
    return source.catalog.rate(API_CALL).cost_krw


def test_a_bad_file_at_start_up_raises_with_file_line_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    write(path, PRICES_YAML.replace('price: "2.50"', "price: 2.50"))
    with pytest.raises(CatalogError, match=rf"^{path}:12: versions\[0\]\.prices\[0\]\.price: "):
        CatalogSource(path)


def test_nothing_is_reloaded_while_the_files_are_unchanged(files: tuple[Path, Path]) -> None:
    source = CatalogSource(files[0])
    first = source.catalog
    assert source.refresh() is False
    assert source.catalog is first


def test_a_good_change_takes_over(files: tuple[Path, Path]) -> None:
    prices, _ = files
    source = CatalogSource(prices)
    assert gpt4o_input(source) == Decimal("2.50") * Decimal("1391.25")
    write(prices, prices.read_text(encoding="utf-8").replace('"2.50"', '"2.60"'))
    assert source.refresh() is True
    assert gpt4o_input(source) == Decimal("2.60") * Decimal("1391.25")


def test_a_change_of_the_fx_file_alone_takes_over(files: tuple[Path, Path]) -> None:
    prices, fx = files
    source = CatalogSource(prices)
    write(fx, fx.read_text(encoding="utf-8").replace("1391.25", "1400.00"))
    assert source.refresh() is True
    assert gpt4o_input(source) == Decimal("2.50") * Decimal("1400.00")


def test_a_bad_change_keeps_the_last_good_catalog_and_is_logged_once(
    files: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    prices, fx = files
    source = CatalogSource(prices)
    good = source.catalog
    write(fx, fx.read_text(encoding="utf-8").replace('"1391.25"', "1391.25"))
    with caplog.at_level(logging.INFO, logger="civicmeter.pricing"):
        assert source.refresh() is False
        assert source.refresh() is False  # the same bad files: not tried or logged again
    assert source.catalog is good
    assert gpt4o_input(source) == Decimal("2.50") * Decimal("1391.25")
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    message = record.getMessage()
    assert "\n" not in message
    assert f"{fx}:3: rates.USD[0].krw_per_unit: must be a quoted decimal string" in message
    assert "still pricing with 2 version(s) v1 .. v2" in message

    # Fixed: the next look takes the fixed files.
    write(fx, fx.read_text(encoding="utf-8").replace("1391.25", '"1391.50"', 1))
    assert source.refresh() is True
    assert gpt4o_input(source) == Decimal("2.50") * Decimal("1391.50")


def test_a_missing_fx_file_is_picked_up_once_it_appears(
    files: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    prices, fx = files
    source = CatalogSource(prices)
    write(prices, prices.read_text(encoding="utf-8").replace("fx.yaml", "fx-2025.yaml"))
    with caplog.at_level(logging.ERROR, logger="civicmeter.pricing"):
        assert source.refresh() is False
    assert "fx-2025.yaml does not exist" in caplog.text
    write(fx.with_name("fx-2025.yaml"), fx.read_text(encoding="utf-8").replace("1391.25", "1500"))
    assert source.refresh() is True
    assert gpt4o_input(source) == Decimal("2.50") * Decimal("1500")


def test_a_removed_catalog_file_keeps_the_last_good_catalog(files: tuple[Path, Path]) -> None:
    prices, _ = files
    source = CatalogSource(prices)
    good = source.catalog
    prices.unlink()
    assert source.refresh() is False
    assert source.catalog is good
