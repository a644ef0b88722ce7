"""Group rates (whole micro-won per tariff) against PriceCatalog.rate (Decimal, one event).

A processor rates a batch's events of one tariff with integers; every cost, its rounding and
the price version it names must be exactly what the Decimal path gives the event alone.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, reject, settings
from hypothesis import strategies as st

from civicmeter.api.money import quantize_cost
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events.quantities import QUANTITIES
from civicmeter.core.events.validation import LIMITS_IN_ORDER
from civicmeter.core.pricing import (
    QUOTED_UNITS,
    CatalogError,
    PriceCatalog,
    UnpricedError,
    micro_won_text,
    parse_catalog,
)
from tests.factories import catalog, event

START = datetime(2025, 1, 1, tzinfo=UTC)
MODELS = ("m1", "m2")
# Few units, so that a drawn event's quantities often all have prices: the group path.
UNITS = ("input_tokens", "output_tokens", "images", "audio_seconds", "requests")
FIELDS = ("input_tokens", "output_tokens", "images", "audio_milliseconds", "requests")
ORGS = ("seoul", "busan")

# A price as a quoted decimal: a whole number of 10^-places, per a power of ten (or per 60,
# which divides exactly only sometimes: then the catalog refuses it and the example is redrawn).
prices = st.builds(
    lambda units, places: str(Decimal(units).scaleb(-places)),
    st.integers(min_value=0, max_value=10**7),
    st.integers(min_value=0, max_value=8),
)
price_entries = st.fixed_dictionaries(
    {
        "provider": st.just("p"),
        "service": st.just("s"),
        "model": st.sampled_from(("*", *MODELS)),
        "unit": st.sampled_from(UNITS),
        "price": prices,
        "per": st.sampled_from((1, 10, 1000, 1_000_000)),
        "currency": st.sampled_from(("KRW", "USD", "JPY")),
    }
)
fx_rates = st.builds(
    lambda units, places: str(Decimal(units).scaleb(-places)),
    st.integers(min_value=1, max_value=10**7),
    st.integers(min_value=0, max_value=6),
)


def _unique(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One price per (model, Usage field): the catalog refuses a field priced twice."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in entries:
        seen[(entry["model"], QUOTED_UNITS[entry["unit"]][0])] = entry
    return list(seen.values())


@st.composite
def catalogs(draw: st.DrawFn) -> PriceCatalog:
    one_currency = draw(st.integers(min_value=0, max_value=3)) > 0  # else a mix: rated alone
    versions = []
    for index in range(draw(st.integers(min_value=1, max_value=3))):
        entries = _unique(draw(st.lists(price_entries, min_size=4, max_size=15)))
        if one_currency:
            for entry in entries:
                entry["currency"] = "USD"
        versions.append(
            {
                "version": f"v{index}",
                "effective_from": (START + timedelta(days=10 * index)).isoformat(),
                "prices": entries,
            }
        )
    contracts = []
    if draw(st.booleans()):
        entries = _unique(draw(st.lists(price_entries, min_size=1, max_size=6)))
        contracts.append(
            {
                "contract": "c1",
                "organization": "seoul",
                "effective_from": (START + timedelta(days=5)).isoformat(),
                "effective_until": (START + timedelta(days=25)).isoformat(),
                "prices": entries,
            }
        )
    fx: dict[str, Any] = {
        currency: [
            {"effective_from": (START + timedelta(days=day)).date(), "krw_per_unit": rate}
            for day, rate in zip(
                days, draw(st.lists(fx_rates, min_size=3, max_size=3)), strict=True
            )
        ]
        for currency, days in (("USD", (-1, 7, 22)), ("JPY", (-1, 15, 28)))
    }
    document = {"versions": versions, "contracts": contracts, "fx": {"rates": fx}}
    try:
        return parse_catalog(document, "generated")
    except CatalogError as exc:  # a price that is no exact decimal per unit: draw another
        assert "exact decimal" in exc.reason
        reject()


LIMITS = dict(zip(QUANTITIES, LIMITS_IN_ORDER, strict=True))


@st.composite
def quantities(draw: st.DrawFn) -> tuple[int, ...]:
    """Within the validated limits; mostly the priced few fields, sometimes another one."""
    names = draw(st.sets(st.sampled_from(FIELDS), min_size=1, max_size=3))
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        names.add(draw(st.sampled_from(QUANTITIES)))
    counts = {name: draw(st.integers(min_value=1, max_value=LIMITS[name])) for name in names}
    return tuple(counts.get(name, 0) for name in QUANTITIES)


moments = st.integers(min_value=-3_600, max_value=40 * 86_400)  # some before any version


def _event(organization: str, model: str, seconds: int, counts: tuple[int, ...]) -> pb.UsageEvent:
    message = event(
        organization_id=organization,
        provider_name="p",
        service_id="s",
        request_model=model,
        usage=pb.Usage(**dict(zip(QUANTITIES, counts, strict=True))),
    )
    message.event_time.FromSeconds(int(START.timestamp()) + seconds)
    return message


@settings(max_examples=400, deadline=None)
@given(
    prices=catalogs(),
    organization=st.sampled_from(ORGS),
    model=st.sampled_from(MODELS),
    offset=moments,
    counts=st.lists(quantities(), min_size=1, max_size=6),
)
def test_every_group_cost_is_the_decimal_cost_of_the_event_alone(
    prices: PriceCatalog,
    organization: str,
    model: str,
    offset: int,
    counts: list[tuple[int, ...]],
) -> None:
    seconds = int(START.timestamp()) + offset
    span = prices.span_of(seconds)
    group = prices.group_rate(span, organization, "p", "s", model, seconds)
    for quantity in counts:
        alone = _event(organization, model, offset, quantity)
        try:
            rating = prices.rate(alone)
        except UnpricedError:
            rating = None
        if group is None:
            continue  # the processor rates such an event alone, with PriceCatalog.rate
        micro = group.micro_won(quantity)
        if micro is None:
            continue  # the same
        assert rating is not None, "a group cost for an event the catalog cannot price"
        assert micro_won_text(micro) == str(rating.cost_krw)
        assert group.price_version(quantity) == rating.price_version


@settings(max_examples=200, deadline=None)
@given(prices=catalogs(), offset=moments, later=st.integers(min_value=0, max_value=3 * 86_400))
def test_a_group_rate_holds_over_its_whole_span(
    prices: PriceCatalog, offset: int, later: int
) -> None:
    """Two instants of one span get the same rate: events are grouped by span."""
    first = int(START.timestamp()) + offset
    second = first + later
    if prices.span_of(first) != prices.span_of(second):
        return
    span = prices.span_of(first)
    at_first = prices._group_rate("seoul", "p", "s", "m1", first)
    at_second = prices._group_rate("seoul", "p", "s", "m1", second)
    assert at_first == at_second
    assert prices.group_rate(span, "seoul", "p", "s", "m1", second) == at_second


@given(micro=st.integers(min_value=0, max_value=10**25))
def test_micro_won_are_written_as_a_quantized_decimal_is(micro: int) -> None:
    assert micro_won_text(micro) == str(quantize_cost(Decimal(micro).scaleb(-6)))


def test_the_test_catalog_rates_its_usual_events_by_group() -> None:
    """The fast path is the common path: an ordinary event is costed by its group."""
    prices = catalog()
    alone = event(usage=pb.Usage(input_tokens=1234, output_tokens=567))
    seconds = alone.event_time.seconds
    group = prices.group_rate(
        prices.span_of(seconds), "seoul", "openai", "openai-api", "gpt-4o", seconds,
    )  # fmt: skip
    assert group is not None
    counts = tuple(getattr(alone.usage, name) for name in QUANTITIES)
    micro = group.micro_won(counts)
    assert micro is not None
    assert micro_won_text(micro) == str(prices.rate(alone).cost_krw)
    # An unpriced quantity sends the event to the Decimal path, for its error.
    counts = tuple(1 if name == "images" else c for name, c in zip(QUANTITIES, counts, strict=True))
    assert group.micro_won(counts) is None
