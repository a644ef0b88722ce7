from civicmeter.core.access.rate_limit import RateLimiter


def test_a_burst_then_the_rate_per_key() -> None:
    limiter = RateLimiter(rate=2, burst=3)
    assert [limiter.allow("10.0.0.7", now=0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("10.0.0.8", now=0.0)  # another key has its own bucket
    assert limiter.retry_after("10.0.0.7", now=0.0) == 0.5
    assert not limiter.allow("10.0.0.7", now=0.4)
    assert limiter.allow("10.0.0.7", now=0.5)
    assert limiter.retry_after("10.0.0.9", now=0.5) == 0.0


def test_buckets_that_refilled_are_forgotten_once_the_table_is_full() -> None:
    limiter = RateLimiter(rate=1, burst=2, max_keys=3)
    for n in range(4):
        assert limiter.allow(f"10.0.0.{n}", now=0.0)
    assert len(limiter._buckets) == 4  # none has refilled yet: all are kept
    assert limiter.allow("10.0.0.9", now=10.0)
    assert list(limiter._buckets) == ["10.0.0.9"]  # the refilled ones made room
    # A forgotten key starts again with a full bucket, as it would have had anyway.
    assert [limiter.allow("10.0.0.0", now=10.0) for _ in range(3)] == [True, True, False]
