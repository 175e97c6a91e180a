#!/usr/bin/env python3
"""Where a tensor-parallel decode step's time goes on this CPU: the default model's runner on 1
shard (all cores) and on 2 (one core each, as `--num-shard 2` pins them), decode steps at
several batch sizes with 160 tokens of context, and the time each step spends inside the
collectives (all-reduces after attention and MLP, the LM head's all-gather). No server.

Usage: .venv/bin/python bench/tensor_parallel_step.py [--batches 1,16,64] [--steps 10]
Writes bench/results/tensor_parallel_step_<cpu>.md and .json. Nothing else heavy may run
meanwhile."""

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from profile_decode_step import build_runner, decode_plan, prefill_plan

from sluice.bench.local_server import git_commit
from sluice.bench.machine import cpu_description, cpu_kind
from sluice.bench.shards import run_on_shards
from sluice.bench.stats import Spread
from sluice.distributed.parallel_context import SINGLE_DEVICE, ParallelContext
from sluice.model.attention.paged import PagedAttentionBackend
from sluice.model.loader import resolve_dtype
from sluice.weights import resolve_model

ROOT = Path(__file__).resolve().parent.parent
CONTEXT = 160


class CollectiveClock:
    """Adds up the wall time spent inside torch.distributed's collectives in this process."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        for name in ("all_reduce", "all_gather"):
            setattr(dist, name, self._timed(getattr(dist, name)))

    def _timed(self, collective: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return collective(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
                self.calls += 1

        return timed


def profile_shard(parallel: ParallelContext, batches: list[int], steps: int) -> dict[str, Any]:
    """Per batch size: each step's time and its time in collectives, in ms."""
    clock = CollectiveClock()
    dtype = resolve_dtype(None, torch.device("cpu"))
    runner = build_runner(
        resolve_model().path,
        PagedAttentionBackend(),
        dtype,
        None,
        max(batches),
        CONTEXT,
        parallel,
    )
    results: dict[str, Any] = {"threads": torch.get_num_threads(), "batches": {}}
    for batch in batches:
        runner.execute(prefill_plan(batch, CONTEXT))
        plan = decode_plan(batch, CONTEXT, 0)
        for _ in range(2):
            runner.execute(plan)
        step_ms, collective_ms, calls = [], [], []
        for _ in range(steps):
            clock.seconds, clock.calls = 0.0, 0
            started = time.perf_counter()
            runner.execute(plan)
            step_ms.append((time.perf_counter() - started) * 1000)
            collective_ms.append(clock.seconds * 1000)
            calls.append(clock.calls)
        results["batches"][batch] = {
            "step_ms": step_ms,
            "collective_ms": collective_ms,
            "calls": calls,
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    profiles = {1: profile_shard(SINGLE_DEVICE, batches, args.steps)}
    profiles[2] = run_on_shards(2, profile_shard, batches, args.steps)[0]  # rank 0's view
    dtype = str(resolve_dtype(None, torch.device("cpu"))).removeprefix("torch.")
    results = {
        "commit": git_commit(),
        "machine": cpu_description(),
        "dtype": dtype,
        "context": CONTEXT,
        "profiles": profiles,
    }
    lines = [
        "# A decode step on 1 and 2 shards, and its time in collectives",
        "",
        f"Commit {results['commit']}, {results['machine']}; default model, {dtype}, "
        f"{CONTEXT} tokens of context; runner alone (no server). 1 shard: "
        f"{profiles[1]['threads']} threads; 2 shards: {profiles[2]['threads']} thread each, "
        f"pinned to a core each, gloo over loopback. Median (min-max) of {args.steps} steps; "
        "shard 0's clock.",
        "",
        "| batch | 1 shard: step ms | 2 shards: step ms | 2 / 1 | 2 shards: in collectives ms "
        "| share | collectives a step | ms a collective |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for batch in batches:
        one, two = profiles[1]["batches"][batch], profiles[2]["batches"][batch]
        step_one, step_two = Spread.of(one["step_ms"]), Spread.of(two["step_ms"])
        collective = Spread.of(two["collective_ms"])
        calls = statistics.median(two["calls"])
        lines.append(
            f"| {batch} | {step_one.format(1)} | {step_two.format(1)} | "
            f"{step_two.median / step_one.median:.2f} | {collective.format(1)} | "
            f"{collective.median / step_two.median:.0%} | {calls:.0f} | "
            f"{collective.median / calls:.2f} |"
        )
    lines.append("")
    args.output.mkdir(parents=True, exist_ok=True)
    name = f"tensor_parallel_step_{cpu_kind()}"
    (args.output / f"{name}.json").write_text(json.dumps(results, indent=2))
    (args.output / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
