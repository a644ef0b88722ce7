from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.events.event_batch import encode_event_batch
from civicmeter.processor.pipeline import BatchProcessor, RawRecord
from tests.factories import NOW, catalog, event, user_id

REPO = Path(__file__).resolve().parents[2]


def records(*messages: pb.UsageEvent | bytes) -> list[RawRecord]:
    """One usage.raw record per message (a batch of one); bytes are taken as a whole record."""
    return [
        RawRecord(m if isinstance(m, bytes) else encode_event_batch([m]), 0, offset)
        for offset, m in enumerate(messages)
    ]


def test_valid_events_are_rated_and_keyed_by_user() -> None:
    result = BatchProcessor(catalog(), "usage.raw").process(records(event(), event()), NOW)
    assert len(result.rated) == 2
    key, value = result.rated[0]
    assert key == b"seoul/u_0123456789abcdef0123456789abcdef"
    rated = pb.RatedUsageEvent.FromString(value)
    assert rated.cost_krw == "6.320000"
    assert rated.price_version == "v2"
    assert not result.dead


def test_bad_records_go_to_the_dead_letters_with_reason_and_origin() -> None:
    bad_field = event(usage=pb.Usage(input_tokens=-1))
    unpriced = event(provider_name="deepseek", service_id="deepseek-chat")
    result = BatchProcessor(catalog(), "usage.raw").process(
        records(b"\xff\xfe not protobuf", bad_field, unpriced, event()), NOW
    )
    assert len(result.rated) == 1
    letters = [pb.DeadLetter.FromString(v) for _, v in result.dead]
    assert [d.reason_code for d in letters] == ["undecodable", "invalid_field", "unpriced"]
    assert letters[1].reason.startswith("usage.input_tokens")
    assert letters[1].payload == bad_field.SerializeToString()
    assert [d.source_offset for d in letters] == [0, 1, 2]
    assert result.reasons == {"undecodable": 1, "invalid_field": 1, "unpriced": 1}


def test_a_batch_record_is_rated_event_by_event_and_a_bad_event_costs_only_itself() -> None:
    hour_ago = NOW - timedelta(hours=1)
    a = event(event_time=hour_ago)
    bad = event(usage=pb.Usage(input_tokens=-5))
    b = event(user_id=user_id("other"), usage=pb.Usage(input_tokens=1000, output_tokens=10))
    record = RawRecord(encode_event_batch([a, bad, b]), 3, 41)
    result = BatchProcessor(catalog(), "usage.raw").process([record], NOW)
    assert result.events == 3
    rated = [pb.RatedUsageEvent.FromString(v) for _, v in result.rated]
    assert [r.event.event_id for r in rated] == [a.event_id, b.event_id]
    assert [k for k, _ in result.rated] == [
        f"seoul/{a.user_id}".encode(),
        f"seoul/{b.user_id}".encode(),
    ]
    assert Decimal(rated[0].cost_krw) == Decimal("6.320000")
    assert Decimal(rated[1].cost_krw) != Decimal(rated[0].cost_krw)
    [letter] = [pb.DeadLetter.FromString(v) for _, v in result.dead]
    assert (letter.reason_code, letter.source_partition, letter.source_offset) == (
        "invalid_field",
        3,
        41,
    )
    assert pb.UsageEvent.FromString(letter.payload) == bad


def test_rated_events_keep_no_bytes_the_schema_does_not_define() -> None:
    canary = "주민등록번호 900101-1234567 prompt text".encode()
    unknown = b"\xfa\x06" + bytes([len(canary)]) + canary  # field 111, length-delimited
    sent = event()
    raw = sent.SerializeToString() + unknown
    result = BatchProcessor(catalog(), "usage.raw").process(
        [RawRecord(encode_event_batch([raw]), 0, 0)], NOW
    )
    [(_, value)] = result.rated
    assert canary not in value
    rated = pb.RatedUsageEvent.FromString(value)
    assert rated.event == sent
    assert rated.rated_time.ToDatetime().replace(tzinfo=NOW.tzinfo) == NOW


def test_a_banned_provider_is_dead_lettered_as_unpriced_and_still_alerted() -> None:
    from civicmeter.policy.organization import load_policies
    from civicmeter.processor.detection import DetectionEngine

    engine = DetectionEngine(load_policies(REPO / "config" / "policies.yaml"))
    deepseek = event(
        provider_name="deepseek", service_id="deepseek-chat", request_model="deepseek-r1"
    )
    result = BatchProcessor(catalog(), "usage.raw", detection=engine).process(
        records(deepseek, event()), NOW
    )
    assert result.reasons == {"unpriced": 1}
    # NOW is a Saturday in Seoul: the user's off-hours use folds into one alert for the day.
    assert sorted(a.alert_type for a in result.alerts) == ["banned_provider", "off_hours"]
    [alert] = [a for a in result.alerts if a.alert_type == "banned_provider"]
    assert alert.trigger_event_id == deepseek.event_id
    assert alert.organization_id == "seoul"
    assert "deepseek" in alert.explanation.lower()


def test_repeats_go_out_as_occurrences_of_one_alert_when_not_folded() -> None:
    from civicmeter.policy.organization import load_policies
    from civicmeter.processor.detection import DetectionEngine

    policies = load_policies(REPO / "config" / "policies.yaml")
    uses = [event(provider_name="deepseek", service_id="deepseek-chat") for _ in range(3)]
    folded = BatchProcessor(catalog(), "usage.raw", detection=DetectionEngine(policies))
    unfolded = BatchProcessor(
        catalog(), "usage.raw", detection=DetectionEngine(policies, fold_repeats=False)
    )
    once = [
        a for a in folded.process(records(*uses), NOW).alerts if a.alert_type == "banned_provider"
    ]
    every = [
        a for a in unfolded.process(records(*uses), NOW).alerts if a.alert_type == "banned_provider"
    ]
    assert len(once) == 1
    assert len(every) == 3 and len({a.dedup_key for a in every}) == 1
    assert [a.trigger_event_id for a in every] == [u.event_id for u in uses]
