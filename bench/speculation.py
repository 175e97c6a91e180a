#!/usr/bin/env python3
"""Speculative decoding (`--speculate N`, n-gram drafts, or a draft model's with
--speculator-model-id) against the same server without it, in the same run: W3 (copy-heavy)
and W1 one request at a time, and W2 (64 at once). Each run starts both servers afresh, side
by side, and sends each workload to one and then the other. Greedy outputs must be identical
with and without speculation: the script stops with an error naming the first prompt that
differs.

Usage: .venv/bin/python bench/speculation.py [--runs 3] [--speculate 4] [--dtype bfloat16]
  [--speculator-model-id DIR]
Writes bench/results/speculation.md and .json (speculation_draft_model.* with a draft model).
Nothing else heavy may run meanwhile."""

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import httpx

from sluice.bench.client import RunTimings, run_workload_blocking
from sluice.bench.local_server import git_commit, local_server
from sluice.bench.machine import cpu_description
from sluice.bench.stats import SingleStreamRun, Spread, ThroughputRun
from sluice.bench.workloads import Workload, load_workload

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True, slots=True)
class ServerRun:
    w3: SingleStreamRun
    w3_answer: SingleStreamRun
    """W3 with EOS honoured: the answer alone, the part that repeats the prompt."""
    w1: SingleStreamRun
    w2: ThroughputRun
    texts: dict[str, list[str]]
    draft_tokens: float
    accepted_tokens: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--speculate", type=int, default=4)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--speculator-model-id", help="draft with this model, not n-grams")
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results")
    args = parser.parse_args()
    drafting = ["--speculate", str(args.speculate)]
    if args.speculator_model_id:
        drafting += ["--speculator-model-id", args.speculator_model_id]
    workloads = {name: load_workload(name) for name in ("w3", "w1", "w2")}
    runs: list[dict[str, ServerRun]] = []
    for index in range(args.runs):
        plain, speculating = measure(
            workloads, ("--dtype", args.dtype), ("--dtype", args.dtype, *drafting), index
        )
        check_identical(plain, speculating)
        runs.append({"plain": plain, "speculate": speculating})
        print(f"plain: {_figures(plain)}\nspeculate: {_figures(speculating)}", flush=True)
    results = {
        "commit": git_commit(),
        "machine": cpu_description(),
        "dtype": args.dtype,
        "speculate": args.speculate,
        "speculator_model_id": args.speculator_model_id,
        "runs": [{name: _figures(run) for name, run in pair.items()} for pair in runs],
    }
    args.output.mkdir(parents=True, exist_ok=True)
    name = "speculation_draft_model" if args.speculator_model_id else "speculation"
    (args.output / f"{name}.json").write_text(json.dumps(results, indent=2))
    table = render(results)
    (args.output / f"{name}.md").write_text(table)
    print(table)


def measure(
    workloads: dict[str, Workload],
    plain_flags: tuple[str, ...],
    speculating_flags: tuple[str, ...],
    run_index: int,
) -> tuple[ServerRun, ServerRun]:
    """Both servers, fresh and running side by side; each workload goes to one and then the
    other, the first in turn, so that the host's drift (this machine is shared) weighs on
    both alike."""
    with local_server(*plain_flags) as plain_url, local_server(*speculating_flags) as spec_url:
        urls = [plain_url, spec_url]
        sent: list[dict[str, RunTimings]] = [{}, {}]
        for turn, (name, workload, concurrency, ignore_eos) in enumerate(
            (
                ("warm-up", Workload("warm-up", ("Hello",), 8), 1, True),
                ("w3", workloads["w3"], 1, True),
                ("w3_answer", workloads["w3"], 1, False),
                ("w1", workloads["w1"], 1, True),
                ("w2", workloads["w2"], len(workloads["w2"].prompts), True),
            )
        ):
            first = (run_index + turn) % 2
            for server in (first, 1 - first):
                sent[server][name] = send(
                    urls[server], workload, concurrency, ignore_eos=ignore_eos
                )
        pages = [httpx.get(f"{url}/metrics").text for url in urls]
    plain, speculating = (_server_run(s, page) for s, page in zip(sent, pages, strict=True))
    return plain, speculating


def _server_run(sent: dict[str, RunTimings], metrics_page: str) -> ServerRun:
    return ServerRun(
        w3=SingleStreamRun.of(sent["w3"]),
        w3_answer=SingleStreamRun.of(sent["w3_answer"]),
        w1=SingleStreamRun.of(sent["w1"]),
        w2=ThroughputRun.of(sent["w2"]),
        texts={
            name: [t.generated_text for t in sent[name].timings]
            for name in ("w3", "w3_answer", "w1", "w2")
        },
        draft_tokens=_metric(metrics_page, "sluice_speculative_draft_tokens"),
        accepted_tokens=_metric(metrics_page, "sluice_speculative_accepted_tokens"),
    )


def _metric(page: str, name: str) -> float:
    """An unlabelled sample of the Prometheus text page."""
    for line in page.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise SystemExit(f"/metrics has no {name}")


def send(url: str, workload: Workload, concurrency: int, *, ignore_eos: bool = True) -> RunTimings:
    timings = run_workload_blocking(
        url, workload.prompts, workload.max_new_tokens, concurrency, ignore_eos=ignore_eos
    )
    if timings.errors:
        raise SystemExit(f"{workload.name}: requests failed: {timings.errors[:3]}")
    return timings


def check_identical(plain: ServerRun, speculating: ServerRun) -> None:
    for name, texts in plain.texts.items():
        for index, (a, b) in enumerate(zip(texts, speculating.texts[name], strict=True)):
            if a != b:
                raise SystemExit(
                    f"OUTPUTS DIFFER: {name} prompt {index}:\n without: {a!r}\n with:    {b!r}"
                )


def _figures(run: ServerRun) -> dict[str, float]:
    return {
        "w3_decode_tokens_per_s": run.w3.decode_tokens_per_s,
        "w3_answer_decode_tokens_per_s": run.w3_answer.decode_tokens_per_s,
        "w1_decode_tokens_per_s": run.w1.decode_tokens_per_s,
        "w2_output_tokens_per_s": run.w2.output_tokens_per_s,
        "draft_tokens": run.draft_tokens,
        "accepted_tokens": run.accepted_tokens,
    }


def render(results: dict[str, Any]) -> str:
    runs = results["runs"]

    def spread(values: list[float], digits: int = 1) -> str:
        return Spread.of(values).format(digits)

    draft_model = results.get("speculator_model_id")
    drafts = f"drafts of `--speculator-model-id {draft_model}`" if draft_model else "n-gram drafts"
    lines = [
        f"# Speculative decoding: {drafts} against no speculation",
        "",
        f"Commit {results['commit']}, {results['machine']}, {results['dtype']}, "
        f"`--speculate {results['speculate']}`, {len(runs)} runs, each on two fresh servers "
        "side by side (each workload goes to both in turn, the first alternating); "
        "median (min-max). Greedy outputs of every prompt were identical with and without "
        "speculation in every run (the script stops otherwise).",
        "",
        "W3 runs twice: with EOS ignored like W1 and W2 (128 tokens, most of them free text after "
        "the answer), and with EOS honoured (the answer alone, which repeats the prompt).",
        "",
        "| workload | without tok/s | with tok/s | with / without | target |",
        "|---|---|---|---|---|",
    ]
    targets = {"W3": ">= 2", "W3, EOS honoured": ">= 2", "W1": ">= 0.95", "W2": ">= 0.95"}
    for name, key in (
        ("W3", "w3_decode_tokens_per_s"),
        ("W3, EOS honoured", "w3_answer_decode_tokens_per_s"),
        ("W1", "w1_decode_tokens_per_s"),
        ("W2", "w2_output_tokens_per_s"),
    ):
        without = [run["plain"][key] for run in runs]
        with_ = [run["speculate"][key] for run in runs]
        ratios = [b / a for a, b in zip(without, with_, strict=True)]
        lines.append(
            f"| {name} | {spread(without)} | {spread(with_)} | {spread(ratios, 2)} | "
            f"{targets[name]} |"
        )
    rates = [
        run["speculate"]["accepted_tokens"] / run["speculate"]["draft_tokens"]
        for run in runs
        if run["speculate"]["draft_tokens"]
    ]
    if rates:
        lines += ["", f"Drafts accepted over all three workloads: {spread(rates, 2)}."]
    return "\n".join([*lines, ""])


if __name__ == "__main__":
    main()
