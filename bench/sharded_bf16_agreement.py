#!/usr/bin/env python3
"""What holds for bfloat16 with 2 shards: greedy answers to W1's and W3's prompts (128 tokens,
EOS ignored) on 2 shards against 1, with the row-parallel partial sums added in bfloat16 or
in float32, and what the float32 sums cost. The model's runner alone, no server.

Usage: .venv/bin/python bench/sharded_bf16_agreement.py
Writes bench/results/sharded_bf16_agreement_<cpu>.md. Nothing else heavy may run meanwhile."""

import dataclasses
import sys
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tests' runner driver: the real scheduler, no server

from sluice.bench.local_server import git_commit  # noqa: E402
from sluice.bench.machine import cpu_description, cpu_kind  # noqa: E402
from sluice.bench.shards import run_on_shards  # noqa: E402
from sluice.bench.workloads import load_workload  # noqa: E402
from sluice.cpu import bfloat16_support  # noqa: E402
from sluice.distributed.parallel_context import ParallelContext  # noqa: E402
from sluice.sampling_params import SamplingParams  # noqa: E402
from sluice.weights import resolve_model  # noqa: E402
from tests.model.runner_driver import build_runner, generate  # noqa: E402

NEW_TOKENS = 128


def answers(parallel: ParallelContext, prompts: list[list[int]], reduce_dtype: str | None) -> dict:
    if reduce_dtype is not None:
        parallel = dataclasses.replace(parallel, reduce_dtype=getattr(torch, reduce_dtype))
    runner = build_runner(resolve_model().path, torch.bfloat16, num_blocks=256, parallel=parallel)
    sampling = [SamplingParams(max_new_tokens=NEW_TOKENS, ignore_eos=True)] * len(prompts)
    generate(runner, prompts[:1], sampling[:1], run="warm-up")
    started = time.perf_counter()
    outputs = generate(runner, prompts, sampling, run="measured").outputs
    return {"outputs": outputs, "seconds": time.perf_counter() - started}


def agreement(outputs: list[list[int]], reference: list[list[int]]) -> tuple[int, list[int]]:
    """Answers identical to the reference, and each answer's first differing position."""
    firsts = [
        next((i for i, (a, b) in enumerate(zip(out, ref, strict=True)) if a != b), len(ref))
        for out, ref in zip(outputs, reference, strict=True)
    ]
    return sum(first == NEW_TOKENS for first in firsts), firsts


def main() -> None:
    tokenizer = AutoTokenizer.from_pretrained(resolve_model().path)
    texts = [*load_workload("w1").prompts, *load_workload("w3").prompts]
    prompts = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    torch.set_num_threads(2)
    one = answers(ParallelContext(), prompts, None)
    runs = {
        "bfloat16 sums": run_on_shards(2, answers, prompts, None)[0],
        "float32 sums": run_on_shards(2, answers, prompts, "float32")[0],
    }
    lines = [
        "# bfloat16 on 2 shards: greedy answers against 1 shard",
        "",
        f"Commit {git_commit()}, {cpu_description()} (bfloat16: {bfloat16_support()}); "
        f"default model, W1's and W3's {len(prompts)} prompts batched, {NEW_TOKENS} tokens "
        "each, EOS ignored; runner alone. 1 shard: 2 threads; 2 shards: a core each.",
        "",
        "| 2 shards, partial sums in | answers identical to 1 shard | first difference at token "
        "(each answer) | seconds for the batch (1 shard: "
        f"{one['seconds']:.1f}) |",
        "|---|---|---|---|",
    ]
    for name, run in runs.items():
        identical, firsts = agreement(run["outputs"], one["outputs"])
        shown = ", ".join("-" if f == NEW_TOKENS else str(f) for f in firsts)
        lines.append(f"| {name} | {identical} of {len(prompts)} | {shown} | {run['seconds']:.1f} |")
    lines.append("")
    output = ROOT / f"bench/results/sharded_bf16_agreement_{cpu_kind()}.md"
    output.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
