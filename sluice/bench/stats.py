"""Summaries of benchmark runs: per-run figures and median (min, max) over runs."""

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from sluice.bench.client import RequestTiming


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
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass(frozen=True, slots=True)
class SingleStreamRun:
    """W1: one request."""

    ttft_s: float
    mean_itl_s: float
    decode_tokens_per_s: float
    num_tokens: int

    @classmethod
    def of(cls, timing: RequestTiming) -> "SingleStreamRun":
        decode_time = timing.token_times[-1] - timing.token_times[0]
        return cls(
            ttft_s=timing.ttft,
            mean_itl_s=statistics.mean(timing.inter_token_latencies),
            decode_tokens_per_s=(timing.num_tokens - 1) / decode_time,
            num_tokens=timing.num_tokens,
        )


@dataclass(frozen=True, slots=True)
class ThroughputRun:
    """W2: many requests at once."""

    wall_s: float
    output_tokens_per_s: float
    num_tokens: int
    latency_p50_s: float
    latency_p99_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    itl_p50_s: float
    itl_p99_s: float

    @classmethod
    def of(cls, wall_s: float, timings: Sequence[RequestTiming]) -> "ThroughputRun":
        num_tokens = sum(t.num_tokens for t in timings)
        latencies = [t.latency for t in timings]
        ttfts = [t.ttft for t in timings]
        itls = [gap for t in timings for gap in t.inter_token_latencies]
        return cls(
            wall_s=wall_s,
            output_tokens_per_s=num_tokens / wall_s,
            num_tokens=num_tokens,
            latency_p50_s=percentile(latencies, 50),
            latency_p99_s=percentile(latencies, 99),
            ttft_p50_s=percentile(ttfts, 50),
            ttft_p99_s=percentile(ttfts, 99),
            itl_p50_s=percentile(itls, 50),
            itl_p99_s=percentile(itls, 99),
        )
