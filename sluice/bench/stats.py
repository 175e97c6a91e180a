"""Figures of one benchmark run, from its request timings, and their median (min, max) over runs.
Only completed requests count; a figure with no sample to stand on is NaN, never a crash."""

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sluice.bench.client import RequestTiming, RunTimings


@dataclass(frozen=True, slots=True)
class Spread:
    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> "Spread":
        return cls(statistics.median(values), min(values), max(values))

    def format(self, digits: int = 1) -> str:
        return f"{self.median:.{digits}f} ({self.min:.{digits}f}-{self.max:.{digits}f})"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


@dataclass(frozen=True, slots=True)
class LatencySamples:
    """Every time to first token, inter-token gap and end-to-end latency of some requests."""

    ttft_s: tuple[float, ...]
    itl_s: tuple[float, ...]
    e2e_s: tuple[float, ...]

    @classmethod
    def of(cls, timings: Iterable[RequestTiming]) -> "LatencySamples":
        timings = [timing for timing in timings if timing.error is None and timing.num_tokens]
        return cls(
            ttft_s=tuple(t.ttft for t in timings),
            itl_s=tuple(gap for t in timings for gap in t.inter_token_latencies),
            e2e_s=tuple(t.latency for t in timings),
        )


@dataclass(frozen=True, slots=True)
class SingleStreamRun:
    """W1 and W3: one request at a time. Decode tokens/s counts the tokens after each request's
    first over the time since its first, summed over the requests."""

    ttft_s: float
    """Mean over the requests."""
    mean_itl_s: float
    decode_tokens_per_s: float
    num_tokens: int

    @classmethod
    def of(cls, run: RunTimings) -> "SingleStreamRun":
        completed = run.completed
        samples = LatencySamples.of(completed)
        decode_tokens = sum(max(0, t.num_tokens - 1) for t in completed)
        decode_time = sum(t.token_times[-1] - t.token_times[0] for t in completed if t.num_tokens)
        return cls(
            ttft_s=_mean(samples.ttft_s),
            mean_itl_s=_mean(samples.itl_s),
            decode_tokens_per_s=_ratio(decode_tokens, decode_time),
            num_tokens=sum(t.num_tokens for t in completed),
        )


@dataclass(frozen=True, slots=True)
class ThroughputRun:
    """W2 and the concurrency sweep: many requests in flight; output tokens over the wall time."""

    wall_s: float
    output_tokens_per_s: float
    num_tokens: int
    latency_p50_s: float
    latency_p90_s: float
    latency_p99_s: float
    ttft_p50_s: float
    ttft_p90_s: float
    ttft_p99_s: float
    itl_p50_s: float
    itl_p90_s: float
    itl_p99_s: float

    @classmethod
    def of(cls, run: RunTimings) -> "ThroughputRun":
        completed = run.completed
        samples = LatencySamples.of(completed)
        num_tokens = sum(t.num_tokens for t in completed)
        e2e, ttft, itl = samples.e2e_s, samples.ttft_s, samples.itl_s
        return cls(
            wall_s=run.wall_s,
            output_tokens_per_s=_ratio(num_tokens, run.wall_s),
            num_tokens=num_tokens,
            latency_p50_s=percentile(e2e, 50),
            latency_p90_s=percentile(e2e, 90),
            latency_p99_s=percentile(e2e, 99),
            ttft_p50_s=percentile(ttft, 50),
            ttft_p90_s=percentile(ttft, 90),
            ttft_p99_s=percentile(ttft, 99),
            itl_p50_s=percentile(itl, 50),
            itl_p90_s=percentile(itl, 90),
            itl_p99_s=percentile(itl, 99),
        )


Figures = SingleStreamRun | ThroughputRun
