"""Runs scenarios against a server, each `runs` times, after one warm-up request, with a progress
bar on stderr counting finished requests (and failed ones)."""

import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
from tqdm import tqdm

from sluice.bench.client import (
    RequestTiming,
    fetch_server_info,
    run_closed_loop,
    stream_request,
)
from sluice.bench.scenarios import Scenario, ScenarioResult

WARM_UP_TOKENS = 8
TIMEOUT = httpx.Timeout(600.0, connect=30.0)
"""Generous: under W2's load a queued request may wait long for its first token."""


class WarmUpError(RuntimeError):
    """The server failed a single short request, so there is nothing to measure."""


@dataclass(frozen=True, slots=True)
class Benchmark:
    server_info: dict[str, object] | None
    """The server's /info, recorded beside the figures."""
    results: tuple[ScenarioResult, ...]


def run_benchmark(
    url: str,
    scenarios: Sequence[Scenario],
    runs: int,
    *,
    ignore_eos: bool,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Benchmark:
    """Raises WarmUpError when the first request fails. `transport` replaces the network (tests
    pass a fake server)."""
    return asyncio.run(_run_benchmark(url, scenarios, runs, ignore_eos, transport))


async def _run_benchmark(
    url: str,
    scenarios: Sequence[Scenario],
    runs: int,
    ignore_eos: bool,
    transport: httpx.AsyncBaseTransport | None,
) -> Benchmark:
    max_concurrency = max(scenario.concurrency for scenario in scenarios)
    limits = httpx.Limits(max_connections=max_concurrency + 1)
    async with httpx.AsyncClient(timeout=TIMEOUT, limits=limits, transport=transport) as client:
        server_info = await fetch_server_info(client, url)
        await _warm_up(client, url, scenarios[0], ignore_eos)
        total = runs * sum(len(scenario.workload.prompts) for scenario in scenarios)
        with tqdm(total=total, unit="req", file=sys.stderr, dynamic_ncols=True) as bar:
            progress = _Progress(bar)
            results = [
                await _run_scenario(client, url, scenario, runs, ignore_eos, progress)
                for scenario in scenarios
            ]
    return Benchmark(server_info, tuple(results))


class _Progress:
    """Counts finished requests on the bar, and failed ones beside it."""

    def __init__(self, bar: tqdm) -> None:
        self.bar = bar
        self.num_failed = 0

    def on_done(self, timing: RequestTiming) -> None:
        self.bar.update(1)
        if timing.error is not None:
            self.num_failed += 1
            self.bar.set_postfix(failed=self.num_failed)


async def _warm_up(
    client: httpx.AsyncClient, url: str, scenario: Scenario, ignore_eos: bool
) -> None:
    """One short request first: it pays any lazy start-up cost and fails fast on a bad URL."""
    max_new_tokens = min(WARM_UP_TOKENS, scenario.workload.max_new_tokens)
    prompt = scenario.workload.prompts[0]
    timing = await stream_request(client, url, prompt, max_new_tokens, ignore_eos)
    if timing.error is not None:
        raise WarmUpError(f"warm-up request to {url} failed: {timing.error}")


async def _run_scenario(
    client: httpx.AsyncClient,
    url: str,
    scenario: Scenario,
    runs: int,
    ignore_eos: bool,
    progress: _Progress,
) -> ScenarioResult:
    workload = scenario.workload
    results = []
    for run_index in range(runs):
        progress.bar.set_description(f"{scenario.name} run {run_index + 1}/{runs}")
        run = await run_closed_loop(
            client,
            url,
            workload.prompts,
            workload.max_new_tokens,
            scenario.concurrency,
            ignore_eos=ignore_eos,
            on_done=progress.on_done,
        )
        results.append(run)
    return ScenarioResult(scenario, tuple(results))
