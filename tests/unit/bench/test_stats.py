"""Figures from synthetic timings: percentiles, W1/W3 decode speed, W2 throughput and latency
percentiles; failed requests never count, and an undefined figure is NaN rather than a crash."""

import math

import pytest

from sluice.bench.stats import LatencySamples, SingleStreamRun, Spread, ThroughputRun, percentile
from tests.unit.bench.timings import run, timing


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 102)]  # 1..101: rank q lands on value q + 1

    assert percentile(values, 0) == 1
    assert percentile(values, 50) == 51
    assert percentile(values, 90) == 91
    assert percentile(values, 99) == 100
    assert percentile(values, 100) == 101
    assert percentile([3.0, 1.0, 2.0], 50) == 2  # order of the input does not matter


def test_percentile_of_nothing_is_nan() -> None:
    assert math.isnan(percentile([], 50))


def test_spread_median_min_max_and_format() -> None:
    spread = Spread.of([3.0, 1.0, 2.5])

    assert spread == Spread(2.5, 1.0, 3.0)
    assert spread.format(2) == "2.50 (1.00-3.00)"


def test_single_stream_figures() -> None:
    # First token 0.5 s after sending, then 4 tokens 0.1 s apart.
    figures = SingleStreamRun.of(run(timing([0.5, 0.6, 0.7, 0.8, 0.9])))

    assert figures.num_tokens == 5
    assert figures.ttft_s == pytest.approx(0.5)
    assert figures.mean_itl_s == pytest.approx(0.1)
    assert figures.decode_tokens_per_s == pytest.approx(10.0)


def test_single_stream_over_several_requests_sums_decode_time() -> None:
    """W3: 3 + 1 decode tokens over 0.3 + 0.4 s, TTFT averaged over the requests."""
    first = timing([0.2, 0.3, 0.4, 0.5], sent_at=0.0)
    second = timing([1.4, 1.8], sent_at=1.0)

    figures = SingleStreamRun.of(run(first, second))

    assert figures.num_tokens == 6
    assert figures.ttft_s == pytest.approx(0.3)
    assert figures.decode_tokens_per_s == pytest.approx(4 / 0.7)


def test_throughput_figures() -> None:
    timings = [timing([0.1 * i, 0.1 * i + 0.05, 0.1 * i + 0.1], sent_at=0.0) for i in range(1, 5)]

    figures = ThroughputRun.of(run(*timings, wall_s=2.0))

    assert figures.num_tokens == 12
    assert figures.wall_s == 2.0
    assert figures.output_tokens_per_s == pytest.approx(6.0)
    assert figures.ttft_p50_s == pytest.approx(0.3)  # TTFTs 0.1..0.4: nearest rank 1.5 -> 0.3
    assert figures.ttft_p99_s == pytest.approx(0.4)
    assert figures.latency_p90_s == pytest.approx(0.5)
    assert figures.itl_p50_s == pytest.approx(0.05)


def test_failed_requests_do_not_count() -> None:
    good = timing([0.1, 0.2])
    failed = timing([0.1], error="stream error: boom")

    figures = ThroughputRun.of(run(good, failed, wall_s=1.0))

    assert figures.num_tokens == 2
    assert figures.ttft_p99_s == pytest.approx(0.1)
    assert LatencySamples.of([good, failed]).e2e_s == (pytest.approx(0.2),)


def test_figures_without_samples_are_nan() -> None:
    """Every request failed, or each stopped after one token (EOS not ignored)."""
    all_failed = run(timing([], error="HTTP 422: too long"))
    one_token = run(timing([0.3]))

    assert math.isnan(ThroughputRun.of(all_failed).latency_p50_s)
    assert ThroughputRun.of(all_failed).output_tokens_per_s == 0
    single = SingleStreamRun.of(one_token)
    assert single.ttft_s == pytest.approx(0.3)
    assert math.isnan(single.decode_tokens_per_s)
    assert math.isnan(single.mean_itl_s)
