import copy
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from civicmeter.core.pricing import CatalogError, UnpricedError, load_catalog, parse_catalog
from civicmeter.usage.v1 import usage_event_pb2 as pb
from tests.factories import CATALOG_DOC, NOW, catalog, event

REPO = Path(__file__).resolve().parents[2]


def test_tokens_are_priced_exactly_in_decimal() -> None:
    rating = catalog().rate(event(usage=pb.Usage(input_tokens=1000, output_tokens=200)))
    # 1000 × 0.0036 (v2 is in force at NOW) + 200 × 0.0136
    assert rating.cost_krw == Decimal("6.320000")
    assert rating.price_version == "v2"
    assert isinstance(rating.cost_krw, Decimal)


def test_the_version_in_force_at_the_event_time_rates_it() -> None:
    before = event(event_time=datetime.fromisoformat("2026-10-31T23:59:59+09:00"))
    after = event(event_time=datetime.fromisoformat("2026-11-01T00:00:00+09:00"))
    assert catalog().rate(before).price_version == "v1"
    assert catalog().rate(after).price_version == "v2"
    assert catalog().rate(before).cost_krw == Decimal("6.120000")


def test_based_on_inherits_prices_it_does_not_override() -> None:
    seat = event(service_id="chatgpt", request_model="", usage=pb.Usage(seat_months=3))
    assert catalog().rate(seat) == catalog().rate(seat)
    assert catalog().rate(seat).cost_krw == Decimal("87000")


def test_model_wildcard_prices_any_model_of_the_service() -> None:
    chat = event(service_id="chatgpt", request_model="gpt-5", usage=pb.Usage(input_tokens=9))
    assert catalog().rate(chat).cost_krw == 0


def test_missing_prices_are_unpriced_errors_naming_what_is_missing() -> None:
    with pytest.raises(UnpricedError, match="images"):
        catalog().rate(event(usage=pb.Usage(images=1)))
    with pytest.raises(UnpricedError, match="anthropic/claude"):
        catalog().rate(event(provider_name="anthropic", service_id="claude"))
    with pytest.raises(UnpricedError, match="no price version"):
        catalog().rate(event(event_time=NOW - timedelta(days=365)))


def broken(path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(CATALOG_DOC)
    *parents, leaf = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[int(leaf) if leaf.isdigit() else leaf] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("currency", "USD", "currency must be KRW"),
        ("versions.0.prices.0.price", 0.0034, "versions[0].prices[0].price: must be a quoted"),
        ("versions.0.prices.1.price", "abc", "versions[0].prices[1].price"),
        ("versions.0.prices.1.price", "-1", "non-negative"),
        ("versions.0.prices.2.unit", "seats", "versions[0].prices[2].unit"),
        ("versions.0.effective_from", "2026-01-01T00:00:00", "UTC offset"),
        ("versions.1.based_on", "v9", "versions[1].based_on"),
        ("versions.1.version", "v1", "appears twice"),
        ("versions.0.prices.0.colour", "red", "unknown keys"),
    ],
)
def test_bad_catalogs_are_rejected_with_the_entry(path: str, value: Any, message: str) -> None:
    with pytest.raises(CatalogError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_catalog(broken(path, value), "prices.yaml")


def test_the_shipped_catalog_loads() -> None:
    shipped = load_catalog(REPO / "config" / "prices.yaml")
    assert [v.version for v in shipped.versions] == ["2024-01", "2024-10"]


def test_an_unreadable_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "prices.yaml"
    bad.write_text("versions: [", encoding="utf-8")
    with pytest.raises(CatalogError, match=str(bad)):
        load_catalog(bad)


tokens = st.integers(min_value=1, max_value=5_000_000)


@given(a_in=tokens, a_out=tokens, b_in=tokens, b_out=tokens)
def test_rating_is_additive_so_splitting_a_call_never_changes_the_bill(
    a_in: int, a_out: int, b_in: int, b_out: int
) -> None:
    def cost(i: int, o: int) -> Decimal:
        return catalog().rate(event(usage=pb.Usage(input_tokens=i, output_tokens=o))).cost_krw

    assert cost(a_in + b_in, a_out + b_out) == cost(a_in, a_out) + cost(b_in, b_out)
