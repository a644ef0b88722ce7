import pytest

from loadtests.soak import growth, slope

MB = 2**20


def series(
    level: float, per_minute: float = 0.0, seconds: int = 600, every: int = 5
) -> list[tuple[float, float]]:
    return [(float(t), level + per_minute * t / 60) for t in range(0, seconds + 1, every)]


def test_a_flat_level_with_one_high_sample_at_each_end_has_not_grown() -> None:
    samples = series(600 * MB)
    warm_at = next(i for i, (t, _) in enumerate(samples) if t >= 120)
    samples[warm_at] = (samples[warm_at][0], 560 * MB)  # a low sample just after warm-up
    samples[-1] = (samples[-1][0], 700 * MB)  # and a merge's buffers in the last one

    found = growth(samples)

    assert found.ratio == 0
    assert found.low == 560 * MB and found.high == 700 * MB


def test_steady_growth_is_seen_in_the_levels_and_the_trend() -> None:
    found = growth(series(600 * MB, per_minute=4 * MB))

    assert found.trend_per_minute == pytest.approx(4 * MB)
    # Levels a minute wide, at their middle samples: 120-175 s after warm-up, 545-600 s last.
    warm, last = 600 + 4 * 147.5 / 60, 600 + 4 * 572.5 / 60
    assert found.warm == pytest.approx(warm * MB)
    assert found.last == pytest.approx(last * MB)
    assert found.ratio == pytest.approx(last / warm - 1)


def test_the_warm_up_is_left_out() -> None:
    rising = [(float(t), 400 * MB + min(t, 100) * MB) for t in range(0, 601, 5)]

    found = growth(rising)

    assert found.first == 400 * MB
    assert found.ratio == 0 and found.trend_per_minute == 0


def test_samples_further_apart_than_a_window_still_give_levels() -> None:
    found = growth([(0.0, 100.0), (300.0, 110.0), (600.0, 121.0)])

    assert (found.warm, found.last) == (110.0, 121.0)
    assert found.ratio == pytest.approx(0.1)


def test_a_soak_needs_two_samples() -> None:
    with pytest.raises(ValueError):
        growth([(0.0, 1.0)])


def test_slope_is_the_least_squares_fit() -> None:
    assert slope([(0, 1), (1, 3), (2, 5)]) == pytest.approx(2)
    assert slope([(1, 4), (1, 4)]) == 0
