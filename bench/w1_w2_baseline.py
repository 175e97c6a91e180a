#!/usr/bin/env python3
"""W1 and W2 (shared/bench/WORKLOADS.md) against a sluice server and, in the same run, the
Hugging Face transformers `generate` baseline, both in bf16 on this machine.

Usage: .venv/bin/python bench/w1_w2_baseline.py [--runs 3] [--workloads PATH] [--output DIR]
Writes DIR/w1_w2_baseline.md and .json. Nothing else heavy may run meanwhile."""

import argparse
import asyncio
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import httpx
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.generation.streamers import BaseStreamer

from sluice.bench.client import (
    RequestTiming,
    RunTimings,
    run_closed_loop,
    run_workload_blocking,
    stream_request,
)
from sluice.bench.local_server import git_commit, local_server
from sluice.bench.machine import cpu_description
from sluice.bench.stats import SingleStreamRun, Spread, ThroughputRun
from sluice.bench.workloads import Workload, load_workload
from sluice.weights import resolve_model

ROOT = Path(__file__).resolve().parent.parent
W2_BASELINE_BATCH = 64
LONG_PROMPT_TOKENS = 2000
LONG_PROMPT_DELAY_S = 8.0
"""By then every W2 prompt is prefilled and all 64 streams decode."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workloads", type=Path, help="default: the copy inside sluice.bench")
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results")
    parser.add_argument("--render-only", action="store_true", help="re-render the saved JSON")
    args = parser.parse_args()
    if args.render_only:
        saved = json.loads((args.output / "w1_w2_baseline.json").read_text())
        (args.output / "w1_w2_baseline.md").write_text(render_table(saved))
        return
    w1, w2 = load_workload("w1", args.workloads), load_workload("w2", args.workloads)
    sluice_runs = measure_sluice(w1, w2, args.runs)
    baseline_w1, baseline_w2 = measure_transformers(w1, w2, args.runs)
    results = {
        "commit": git_commit(),
        "machine": cpu_description(),
        "torch": torch.__version__,
        "dtype": "bfloat16",
        "runs": args.runs,
        "sluice": {
            "w1": _as_dicts([run.w1 for run in sluice_runs]),
            "w2": _as_dicts([run.w2 for run in sluice_runs]),
            "w2_with_long_prompt": _as_dicts([run.w2_with_long_prompt for run in sluice_runs]),
            "long_prompt_ttft_s": [run.long_prompt_ttft_s for run in sluice_runs],
        },
        "transformers": {"w1": _as_dicts(baseline_w1), "w2": _as_dicts(baseline_w2)},
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "w1_w2_baseline.json").write_text(json.dumps(results, indent=2))
    table = render_table(results)
    (args.output / "w1_w2_baseline.md").write_text(table)
    plot_results(results, args.output / "w1_w2_baseline.png")
    print(table)


@dataclasses.dataclass(frozen=True, slots=True)
class SluiceRun:
    w1: SingleStreamRun
    w2: ThroughputRun
    w2_with_long_prompt: ThroughputRun
    """W2 again on a fresh server, with a LONG_PROMPT_TOKENS prompt arriving mid-run."""
    long_prompt_ttft_s: float


def measure_sluice(w1: Workload, w2: Workload, runs: int) -> list[SluiceRun]:
    """Every run starts from fresh servers, so that no run finds the previous one's prompts in
    the prefix cache."""
    long_prompt = _long_prompt(w2)
    results = []
    for _ in range(runs):
        with local_server() as url:
            run_workload_blocking(url, ("Hello",), 8, 1)
            single = SingleStreamRun.of(
                run_workload_blocking(url, w1.prompts, w1.max_new_tokens, 1)
            )
            everything = len(w2.prompts)
            throughput = ThroughputRun.of(
                run_workload_blocking(url, w2.prompts, w2.max_new_tokens, everything)
            )
        with local_server() as url:
            run_workload_blocking(url, ("Hello",), 8, 1)
            loaded, long_timing = asyncio.run(_w2_with_long_prompt(url, w2, long_prompt))
        results.append(SluiceRun(single, throughput, ThroughputRun.of(loaded), long_timing.ttft))
        print(f"sluice: {results[-1]}", flush=True)
    return results


async def _w2_with_long_prompt(
    url: str, w2: Workload, long_prompt: str
) -> tuple[RunTimings, RequestTiming]:
    """W2, and LONG_PROMPT_DELAY_S after it starts, one long prompt (16 new tokens)."""
    limits = httpx.Limits(max_connections=len(w2.prompts) + 2)
    async with httpx.AsyncClient(timeout=None, limits=limits) as client:
        everything = len(w2.prompts)
        streams = asyncio.create_task(
            run_closed_loop(client, url, w2.prompts, w2.max_new_tokens, everything)
        )
        await asyncio.sleep(LONG_PROMPT_DELAY_S)
        long_timing = await stream_request(client, url, long_prompt, 16, ignore_eos=True)
        if long_timing.error is not None:
            raise RuntimeError(f"the long prompt failed: {long_timing.error}")
        return await streams, long_timing


def _long_prompt(w2: Workload) -> str:
    """LONG_PROMPT_TOKENS tokens of text no W2 prompt starts with (no prefix-cache hit)."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_model().path)
    text = "Summarise these conversations.\n" + "\n".join(reversed(w2.prompts))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:LONG_PROMPT_TOKENS]
    return tokenizer.decode(ids)


class _TokenClock(BaseStreamer):
    """Records when `generate` produces each new token (the first `put` is the prompt)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if self._seen_prompt:
            self.times.append(time.perf_counter())
        self._seen_prompt = True

    def end(self) -> None:
        pass


def measure_transformers(
    w1: Workload, w2: Workload, runs: int
) -> tuple[list[SingleStreamRun], list[ThroughputRun]]:
    path = resolve_model().path
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
    fixed_length = {"max_new_tokens": w1.max_new_tokens, "min_new_tokens": w1.max_new_tokens}
    single, throughput = [], []
    with torch.inference_mode():
        model.generate(**tokenizer(list(w1.prompts), return_tensors="pt"), max_new_tokens=8)
        for _ in range(runs):
            clock = _TokenClock()
            inputs = tokenizer(list(w1.prompts), return_tensors="pt")
            started = time.perf_counter()
            model.generate(**inputs, do_sample=False, streamer=clock, **fixed_length)
            single.append(_single_from_clock(started, clock.times))
            batch = tokenizer(
                list(w2.prompts[:W2_BASELINE_BATCH]), return_tensors="pt", padding=True
            )
            started = time.perf_counter()
            out = model.generate(**batch, do_sample=False, **fixed_length)
            wall = time.perf_counter() - started
            num_tokens = (out.shape[1] - batch["input_ids"].shape[1]) * out.shape[0]
            throughput.append(_static_batch_run(wall, num_tokens))
            print(f"transformers: {single[-1]}\n              {throughput[-1]}", flush=True)
    return single, throughput


def _single_from_clock(started: float, times: list[float]) -> SingleStreamRun:
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return SingleStreamRun(
        ttft_s=times[0] - started,
        mean_itl_s=sum(gaps) / len(gaps),
        decode_tokens_per_s=(len(times) - 1) / (times[-1] - times[0]),
        num_tokens=len(times),
    )


def _static_batch_run(wall: float, num_tokens: int) -> ThroughputRun:
    """A static batch finishes all requests together: latency = wall time; no per-token clock."""
    nan = float("nan")
    return ThroughputRun(
        wall_s=wall,
        output_tokens_per_s=num_tokens / wall,
        num_tokens=num_tokens,
        latency_p50_s=wall,
        latency_p90_s=wall,
        latency_p99_s=wall,
        ttft_p50_s=nan,
        ttft_p90_s=nan,
        ttft_p99_s=nan,
        itl_p50_s=nan,
        itl_p90_s=nan,
        itl_p99_s=nan,
    )


def render_table(results: dict[str, Any]) -> str:
    def cell(runs: list[dict[str, float]], key: str, scale: float = 1, digits: int = 1) -> str:
        values = [run[key] * scale for run in runs]
        if any(math.isnan(v) for v in values):
            return "n/a"
        return Spread.of(values).format(digits)

    def row(name: str, system: dict[str, list[dict[str, float]]]) -> str:
        w1, w2 = system["w1"], system["w2"]
        cells = [
            cell(w1, "decode_tokens_per_s"),
            cell(w1, "ttft_s", 1000, 0),
            cell(w2, "output_tokens_per_s"),
            cell(w2, "wall_s", digits=2),
            cell(w2, "ttft_p50_s", digits=2),
            cell(w2, "itl_p50_s", 1000, 0),
            cell(w2, "itl_p99_s", 1000, 0),
        ]
        return f"| {name} | " + " | ".join(cells) + " |"

    return "\n".join(
        [
            "# W1 and W2: sluice against the transformers baseline",
            "",
            f"Commit {results['commit']}, {results['machine']}, torch {results['torch']}, "
            f"bfloat16, {results['runs']} runs each; median (min-max).",
            "sluice runs as a server and is measured over HTTP (`/generate_stream`, EOS ignored); "
            "transformers `generate` runs in-process (W1 alone, W2 as one static batch of 64, "
            "so it has no per-token clock).",
            "",
            "| system | W1 decode tok/s | W1 TTFT ms | W2 output tok/s | W2 wall s | "
            "W2 TTFT p50 s | W2 ITL p50 ms | W2 ITL p99 ms |",
            "|---|---|---|---|---|---|---|---|",
            row("sluice", results["sluice"]),
            row("transformers generate", results["transformers"]),
            "",
            *_targets(results),
            "",
        ]
    )


def _targets(results: dict[str, Any]) -> list[str]:
    """The issue's W1/W2 targets, each as a per-run ratio or figure, median (min-max)."""
    ours, theirs = results["sluice"], results["transformers"]
    speedup = [
        a["output_tokens_per_s"] / b["output_tokens_per_s"]
        for a, b in zip(ours["w2"], theirs["w2"], strict=True)
    ]
    itl_spread = [run["itl_p99_s"] / run["itl_p50_s"] for run in ours["w2"]]
    long_prompt = [
        loaded["itl_p99_s"] / alone["itl_p99_s"]
        for loaded, alone in zip(ours["w2_with_long_prompt"], ours["w2"], strict=True)
    ]

    def spread(values: list[float], digits: int = 2) -> str:
        return Spread.of(values).format(digits)

    return [
        "| target | measured | goal |",
        "|---|---|---|",
        f"| W2 output tok/s, sluice / transformers (same run) | {spread(speedup)} | >= 2 |",
        f"| W2 ITL p99 / p50 | {spread(itl_spread)} | <= 3 |",
        f"| W2 ITL p99 with a {LONG_PROMPT_TOKENS}-token prompt arriving at "
        f"{LONG_PROMPT_DELAY_S:.0f} s / without | {spread(long_prompt)} | <= 2 |",
        f"| TTFT of that long prompt, s | {spread(ours['long_prompt_ttft_s'])} | |",
    ]


def plot_results(results: dict[str, Any], path: Path) -> None:
    """Bars of the medians with min-max whiskers: W1 decode tok/s and W2 output tok/s."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(1, 2, figsize=(9, 3.5))
    systems = [("sluice", "tab:blue"), ("transformers", "tab:gray")]
    for ax, (workload, key, title) in zip(
        axes,
        [
            ("w1", "decode_tokens_per_s", "W1 decode tokens/s (batch 1)"),
            ("w2", "output_tokens_per_s", "W2 output tokens/s (64 requests)"),
        ],
        strict=True,
    ):
        for position, (system, color) in enumerate(systems):
            spread = Spread.of([run[key] for run in results[system][workload]])
            ax.bar(position, spread.median, color=color)
            ax.errorbar(
                position,
                spread.median,
                yerr=[[spread.median - spread.min], [spread.max - spread.median]],
                color="black",
                capsize=4,
            )
        ax.set_xticks(range(len(systems)), [name for name, _ in systems])
        ax.set_title(title)
    figure.suptitle(f"bf16, 2 threads, commit {results['commit']}; median, min-max")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def _as_dicts(runs: list[SingleStreamRun] | list[ThroughputRun]) -> list[dict[str, float]]:
    return [dataclasses.asdict(r) for r in runs]


if __name__ == "__main__":
    main()
