import json
from typing import Any

import pytest

from civicmeter.api.event_json import DecodeError, decode_batch, encode_batch
from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from tests.factories import event


def cloud_event(**data_changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "organization_id": "seoul",
        "department_id": "welfare",
        "user_id": "u_0123456789abcdef0123456789abcdef",
        "account_kind": "organizational",
        "provider_name": "openai",
        "service_id": "chatgpt",
        "operation_name": "chat",
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }
    data.update(data_changes)
    return {
        "specversion": "1.0",
        "id": "e-1",
        "source": "gw-1",
        "type": "kr.civicmeter.usage.v1",
        "time": "2024-03-04T09:15:00+09:00",
        "datacontenttype": "application/json",
        "data": data,
        "traceparent": "ignored-ext",
    }


def test_a_batch_decodes_to_protobuf_events() -> None:
    [decoded] = decode_batch(json.dumps([cloud_event()]).encode())
    assert decoded.event_id == "e-1"
    assert decoded.gateway_id == "gw-1"
    assert decoded.usage.input_tokens == 10
    assert decoded.account_kind == pb.ACCOUNT_KIND_ORGANIZATIONAL
    # 09:15 in Seoul is 00:15 UTC.
    assert decoded.event_time.ToJsonString() == "2024-03-04T00:15:00Z"


def test_a_single_event_object_is_accepted() -> None:
    assert len(decode_batch(json.dumps(cloud_event()).encode())) == 1


def test_round_trip_through_json_preserves_the_event() -> None:
    original = event()
    original.risk.pii_findings["phone"] = 3
    original.risk.content_category = "work.drafting"
    original.reported_cost.currency_code = "USD"
    original.reported_cost.nanos = 5_000_000
    [back] = decode_batch(encode_batch([original]))
    assert back == original


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ([cloud_event(usage={"input_tokens": "ten"})], "$[0].data.usage.input_tokens"),
        ([cloud_event(), cloud_event(usage={"inputtokens": 1})], "$[1].data.usage"),
        ([cloud_event(account_kind="shared")], "$[0].data.account_kind"),
        ([cloud_event(prompt="leaked text")], "$[0].data"),
        ([{**cloud_event(), "time": "2024-03-04T09:15:00"}], "$[0].time"),
        ([{**cloud_event(), "type": "other"}], "$[0].type"),
    ],
)
def test_errors_name_the_path_of_the_field(body: list[dict[str, Any]], where: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_batch(json.dumps(body).encode())
    assert where in str(info.value)


def test_malformed_json_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="malformed JSON") as info:
        decode_batch(b"[{")
    assert (info.value.index, info.value.field) == (None, "body")


def with_usage(**usage: int) -> dict[str, Any]:
    return cloud_event(usage={"input_tokens": 1, **usage})


@pytest.mark.parametrize(
    ("body", "index", "field"),
    [
        ([with_usage(input_tokens=2**63)], 0, "data.usage.input_tokens"),
        ([cloud_event(), with_usage(output_tokens=-(2**63) - 1)], 1, "data.usage.output_tokens"),
        ([with_usage(images=2**70)], 0, "data.usage.images"),
        ([cloud_event(risk={"pii_findings": {"phone": 2**32}})], 0,
         "data.risk.pii_findings.phone"),
        ([cloud_event(risk={"pii_findings": {"phone": -1}})], 0, "data.risk.pii_findings.phone"),
        ([cloud_event(reported_cost={"currency_code": "USD", "units": 2**63})], 0,
         "data.reported_cost.units"),
        ([cloud_event(reported_cost={"currency_code": "USD", "nanos": 2**31})], 0,
         "data.reported_cost.nanos"),
        ([{**cloud_event(), "time": "9999-12-31T23:59:59-23:59"}], 0, "time"),
        ([{**cloud_event(), "time": "0001-01-01T00:00:00+23:59"}], 0, "time"),
        ([with_usage(input_tokens=True)], 0, "data.usage.input_tokens"),
        ([cloud_event(risk={"pii_findings": {f"k{n}": 1 for n in range(65)}})], 0,
         "data.risk.pii_findings"),
        ([{**cloud_event(), "id": 7}], 0, "id"),
    ],
)  # fmt: skip
def test_values_beyond_their_protobuf_field_are_named(
    body: list[dict[str, Any]], index: int, field: str
) -> None:
    with pytest.raises(DecodeError) as info:
        decode_batch(json.dumps(body).encode())
    assert (info.value.index, info.value.field) == (index, field)


def test_the_largest_values_of_each_field_still_decode() -> None:
    body = [cloud_event(usage={"input_tokens": 2**63 - 1},
                        risk={"pii_findings": {"phone": 2**32 - 1}},
                        reported_cost={"currency_code": "USD", "units": 2**63 - 1,
                                       "nanos": 2**31 - 1})]  # fmt: skip
    [decoded] = decode_batch(json.dumps(body).encode())
    assert decoded.usage.input_tokens == 2**63 - 1
    assert decoded.risk.pii_findings["phone"] == 2**32 - 1
    assert decoded.reported_cost.nanos == 2**31 - 1


def one_event_with(old: bytes, new: bytes) -> bytes:
    return json.dumps([cloud_event()]).encode().replace(old, new)


@pytest.mark.parametrize(
    "body",
    [
        one_event_with(b'"input_tokens": 10', b'"input_tokens": NaN'),
        one_event_with(b'"input_tokens": 10', b'"input_tokens": Infinity'),
        one_event_with(b'"input_tokens": 10', b'"input_tokens": 1e400'),
        one_event_with(b'"e-1"', b'"e\\ud800"'),  # a lone surrogate
        one_event_with(b'"e-1"', b'"e\xff1"'),  # not UTF-8
        b"",
        b"7",
    ],
)
def test_hostile_json_is_a_decode_error(body: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_batch(body)


def test_an_extension_attribute_nested_100000_deep_is_a_decode_error() -> None:
    event = json.dumps(cloud_event()).encode()
    deep = b'{"deep": ' + b"[" * 100_000 + b"]" * 100_000 + b", " + event[1:]
    with pytest.raises(DecodeError, match="nested too deeply"):
        decode_batch(b"[" + deep + b"]")
    assert len(decode_batch(b"[" + event + b"]")) == 1  # the decoder still works
