"""The documented rule from a CloudEvents `source` to a gateway id, and attribute names."""

from __future__ import annotations

import pytest

from civicmeter.api.event_json import DecodeError, cloudevent_field, gateway_id_from_source


@pytest.mark.parametrize(
    ("source", "gateway_id"),
    [
        ("gw-seoul-1", "gw-seoul-1"),
        ("urn:seoul:gw-1", "urn:seoul:gw-1"),
        ("/gateways/seoul-1", "seoul-1"),
        ("/gateways/seoul-1/", "seoul-1"),
        ("/seoul/gw-1", "seoul/gw-1"),
        ("https://gw.seoul.go.kr/ai", "gw.seoul.go.kr/ai"),
        ("https://gw.seoul.go.kr:8443/", "gw.seoul.go.kr"),
    ],
)
def test_sources_map_to_gateway_ids(source: str, gateway_id: str) -> None:
    assert gateway_id_from_source(source) == gateway_id


@pytest.mark.parametrize("source", ["/gateways/a?b=1", "https://gw.example/x#frag"])
def test_a_query_or_fragment_is_refused(source: str) -> None:
    with pytest.raises(DecodeError, match="query or fragment"):
        gateway_id_from_source(source)


@pytest.mark.parametrize(
    ("field", "attribute"),
    [
        ("gateway_id", "source"),
        ("event_id", "id"),
        ("event_time.seconds", "time"),
        ("usage.input_tokens", "data.usage.input_tokens"),
        ("risk.pii_findings['x']", "data.risk.pii_findings['x']"),
    ],
)
def test_event_fields_are_named_as_cloudevents_attributes(field: str, attribute: str) -> None:
    assert cloudevent_field(field) == attribute
