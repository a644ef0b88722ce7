"""validate_encoded_batch (ingest/batch_validation.py): every error exactly the one-by-one error
of validate_event_at, whether the identities and usages of the batch are new or remembered,
and each event's identity giving its partition key."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from datetime import timedelta

import pytest

from civicmeter.api.usage.v1 import usage_event_pb2 as pb
from civicmeter.core.kafka import event_key
from civicmeter.ingest import batch_validation
from civicmeter.ingest.batch_validation import identity_key, validate_encoded_batch
from tests.core.test_validation_batch import BAD, EARLIEST, LATEST, WINDOW, one_by_one
from tests.factories import NOW, event


@pytest.fixture(autouse=True)
def nothing_remembered() -> Iterator[None]:
    """Each test starts with no identity or usage known valid."""
    batch_validation._valid_identities.clear()
    batch_validation._valid_usages.clear()
    yield


def errors_of(events: Sequence[pb.UsageEvent]) -> dict[int, str]:
    encoded = pb.UsageEventBatch(events=events).SerializeToString()
    identities, errors = validate_encoded_batch(events, encoded, EARLIEST, LATEST, WINDOW)
    assert len(identities) == len(events)
    return {i: str(e) for i, e in errors.items()}


@pytest.mark.parametrize("bad", BAD.values(), ids=BAD.keys())
def test_a_bad_event_among_good_ones_gets_exactly_its_one_by_one_error(bad: pb.UsageEvent) -> None:
    events = [event(), bad, event()]
    for _ in range(2):  # first unknown, then the good events' identity and usage remembered
        assert errors_of(events) == one_by_one(events)
        assert set(one_by_one(events)) == {1}


def test_every_error_of_a_batch_of_bad_events_is_the_one_by_one_error() -> None:
    events = [*BAD.values(), event(), *BAD.values()]
    for _ in range(2):
        assert errors_of(events) == one_by_one(events)
    assert len(one_by_one(events)) == 2 * len(BAD)


def test_a_first_event_refused_for_its_time_proves_nothing_about_its_identity() -> None:
    """The first event of a new identity is refused for another field: every other event with
    that identity is still checked in full."""
    late = event(event_time=NOW - timedelta(days=500))
    events = [late, event(), event(usage=pb.Usage(images=5_000)), late, event()]
    assert errors_of(events) == one_by_one(events)
    assert set(one_by_one(events)) == {0, 2, 3}


def test_an_invalid_identity_or_usage_is_never_remembered() -> None:
    bad_identity, bad_usage = event(department_id="x" * 200), event(usage=pb.Usage(requests=-1))
    for _ in range(3):
        assert errors_of([event(), bad_identity, bad_usage]) == one_by_one(
            [event(), bad_identity, bad_usage]
        )
        assert len(one_by_one([bad_identity, bad_usage])) == 2


@pytest.mark.parametrize("limit", [200_000, 2], ids=["remembered", "forgotten"])
def test_random_batches_get_the_one_by_one_errors(
    limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches mixing good events of many identities and usages with bad ones, the later ones
    meeting identities and usages the earlier ones proved (or forgot, past a small limit)."""
    monkeypatch.setattr(batch_validation, "_IDENTITIES_LIMIT", limit)
    monkeypatch.setattr(batch_validation, "_USAGES_LIMIT", limit)
    rng = random.Random(11)
    bad = list(BAD.values())
    for _ in range(40):
        events = []
        for _ in range(rng.randrange(1, 60)):
            if rng.random() < 0.15:
                events.append(rng.choice(bad))
                continue
            good = event(
                user_id=f"u_{rng.randrange(8):032x}",
                service_id=rng.choice(["openai-api", "clova-x", "wrtn"]),
                usage=pb.Usage(input_tokens=rng.randrange(1, 30), output_tokens=rng.randrange(3)),
            )
            if rng.random() < 0.2:  # an event refused only for its time or its id
                good.event_time.seconds += int(WINDOW.max_future.total_seconds()) + 3_600
            if rng.random() < 0.1:
                good.event_id = "bad id"
            events.append(good)
        assert errors_of(events) == one_by_one(events)
        assert len(batch_validation._valid_usages) <= limit
        assert len(batch_validation._valid_identities) <= limit


def test_an_identity_gives_its_events_partition_key() -> None:
    events = [event(), event(organization_id="busan", user_id=f"u_{7:032x}", purpose="audit")]
    encoded = pb.UsageEventBatch(events=events).SerializeToString()
    identities, errors = validate_encoded_batch(events, encoded, EARLIEST, LATEST, WINDOW)
    assert errors == {}
    assert [identity_key(i) for i in identities] == [
        event_key(e.organization_id, e.user_id) for e in events
    ]
    assert identities[0] != identities[1]
    assert validate_encoded_batch([], b"", EARLIEST, LATEST, WINDOW) == ([], {})
