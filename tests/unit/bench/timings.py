"""Synthetic request timings for the bench tests: tokens at chosen times, no server."""

from collections.abc import Sequence

from sluice.bench.client import RequestTiming, RunTimings


def timing(
    token_times: Sequence[float], sent_at: float = 0.0, error: str | None = None
) -> RequestTiming:
    return RequestTiming(sent_at, tuple(token_times), "text", error=error)


def run(*timings: RequestTiming, wall_s: float = 1.0) -> RunTimings:
    return RunTimings(wall_s, timings)
