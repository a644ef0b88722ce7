"""The configurable attribute mapping of OTLP spans to usage events (no services needed)."""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics import MeterProvider

from civicmeter.core.access.auth import Principal
from civicmeter.ingest.otlp import AttributeMapping, OtlpReceiver
from tests.factories import user_id
from tests.ingest.test_otlp import OPENAI, spans

SEOUL = Principal("gw-seoul", "seoul", "gateway")


def test_the_mapping_is_read_from_the_environment() -> None:
    mapping = AttributeMapping.from_env(
        {"CIVICMETER_OTLP_ATTRIBUTES": "department=team.name|k8s.namespace.name, user=enduser.id",
         "CIVICMETER_OTLP_DEFAULT_DEPARTMENT": "unassigned"}
    )  # fmt: skip
    assert mapping.department == ("team.name", "k8s.namespace.name")
    assert mapping.user == ("enduser.id",)
    assert mapping.organization == AttributeMapping().organization  # unchanged
    assert mapping.default_department == "unassigned"


@pytest.mark.parametrize("spec", ["dept=team.name", "department=", "department"])
def test_a_bad_mapping_names_the_fields(spec: str) -> None:
    with pytest.raises(ValueError, match="fields: account_kind, department"):
        AttributeMapping.from_env({"CIVICMETER_OTLP_ATTRIBUTES": spec})


def test_configured_attributes_and_the_default_department_are_used() -> None:
    mapping = AttributeMapping(
        department=("team.name",), user=("enduser.id",), default_department="unassigned"
    )
    receiver = OtlpReceiver(mapping, MeterProvider().get_meter("test"))
    chat = {**OPENAI, "gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 3,
            "enduser.id": user_id("park")}  # fmt: skip
    exported = spans(
        {**chat, "team.name": "transport"},
        chat,  # no team: the default department
        resource={"service.name": "gw-seoul-1", "civicmeter.department_id": "ignored"},
    )
    conversion = receiver.convert(encode_spans(exported), SEOUL)
    assert conversion.refusals == []
    assert [e.department_id for e in conversion.events] == ["transport", "unassigned"]
    assert {e.user_id for e in conversion.events} == {user_id("park")}


def test_without_a_department_the_span_is_refused_naming_the_attribute() -> None:
    receiver = OtlpReceiver(AttributeMapping(), MeterProvider().get_meter("test"))
    chat = {**OPENAI, "gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 3}
    exported = spans(chat, resource={"service.name": "gw-seoul-1"})
    conversion = receiver.convert(encode_spans(exported), SEOUL)
    assert conversion.events == []
    [refusal] = conversion.refusals
    assert refusal.endswith("civicmeter.department_id: is required")
