from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events.event_batch import encode_event_batch
from civicmeter.core.events.rare_fields import events_with_rare_fields
from tests.factories import event


def test_events_without_rare_fields_give_none() -> None:
    assert events_with_rare_fields(encode_event_batch([event(), event(), event()])) == []
    assert events_with_rare_fields(b"") == []


def test_each_rare_field_is_found_even_when_set_empty() -> None:
    risk, cost, rules, empty_rule, findings = (event() for _ in range(5))
    risk.risk.SetInParent()  # present, with nothing in it
    cost.reported_cost.SetInParent()
    rules.decision_rule_ids.append("rule-1")
    empty_rule.decision_rule_ids.append("")
    findings.risk.pii_findings["rrn"] = 1
    batch = [event(), risk, event(), cost, rules, empty_rule, findings, event()]
    assert events_with_rare_fields(encode_event_batch(batch)) == [1, 3, 4, 5, 6]


def test_other_fields_and_unknown_ones_are_not_taken_for_rare_ones() -> None:
    # Bytes that look like the rare fields' keys inside strings and numbers: 'j' is the key
    # of risk, 'z' that of a reported cost.
    lookalike = event(organization_id="jeju", department_id="zz", purpose="jjzz")
    lookalike.usage.input_tokens = 0x6A
    unknown = lookalike.SerializeToString() + b"\xfa\x06\x02jz"  # field 111
    assert events_with_rare_fields(encode_event_batch([lookalike, unknown])) == []
    assert pb.UsageEvent.FromString(unknown).organization_id == "jeju"
