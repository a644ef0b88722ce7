import json
from typing import Any

import pytest

from civicmeter.core.event_json import DecodeError, decode_batch, encode_batch
from civicmeter.usage.v1 import usage_event_pb2 as pb
from tests.factories import event


def cloud_event(**data_changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "organization_id": "seoul",
        "department_id": "welfare",
        "user_id": "u_1",
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
    with pytest.raises(DecodeError, match="malformed JSON"):
        decode_batch(b"[{")
