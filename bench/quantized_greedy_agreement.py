#!/usr/bin/env python3
"""How often a quantized checkpoint's greedy output starts like bfloat16's: for each prompt of
W1, W2 and W3, whether the first 16 greedy tokens of the checkpoint (bfloat16 activations)
equal the full-precision model's. In-process, all prompts of a workload batched together
(greedy bfloat16 output does not depend on batching, see README).

Usage: .venv/bin/python bench/quantized_greedy_agreement.py CHECKPOINT [--name 8-bit GPTQ]
Appends a section to bench/results/quantized_greedy_agreement.md."""

import argparse
from pathlib import Path

import torch
from transformers import AutoTokenizer

from sluice.bench.local_server import git_commit
from sluice.bench.workloads import load_workload
from sluice.distributed.parallel_context import SINGLE_DEVICE
from sluice.engine.kv_cache.manager import KVCacheManager
from sluice.engine.request import Request
from sluice.engine.scheduler import Scheduler, SchedulerLimits
from sluice.model.attention.paged import PagedAttentionBackend
from sluice.model.kv_cache import KVCacheSpec
from sluice.model.loader import load_model, read_hf_config
from sluice.model.runner import ModelRunner
from sluice.quantization.scheme import resolve_scheme
from sluice.sampling_params import SamplingParams
from sluice.weights import resolve_model

ROOT = Path(__file__).resolve().parent.parent
NUM_TOKENS = 16
BLOCK_SIZE = 16
NUM_BLOCKS = 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--name", default="quantized checkpoint")
    parser.add_argument(
        "--output", type=Path, default=ROOT / "bench/results/quantized_greedy_agreement.md"
    )
    args = parser.parse_args()
    reference_path = resolve_model().path
    tokenizer = AutoTokenizer.from_pretrained(reference_path)
    prompts = [
        tokenizer(text)["input_ids"]
        for name in ("w1", "w2", "w3")
        for text in dict.fromkeys(load_workload(name).prompts)  # W1's prompts open W2's
    ]
    expected = greedy(runner_for(reference_path), prompts)
    answered = greedy(runner_for(args.checkpoint), prompts)
    same = sum(a == b for a, b in zip(answered, expected, strict=True))
    section = (
        f"## {args.name}\n\nCommit {git_commit()}, checkpoint `{args.checkpoint.name}`: the first "
        f"{NUM_TOKENS} greedy tokens equal bfloat16's on {same} of {len(prompts)} prompts "
        "(W1, W2 and W3, duplicates once).\n\n"
    )
    with args.output.open("a") as file:
        file.write(section)
    print(section)


def runner_for(path: Path) -> ModelRunner:
    device = torch.device("cpu")
    backend = PagedAttentionBackend()
    config = read_hf_config(path)
    model = load_model(
        path,
        config,
        dtype=torch.bfloat16,
        device=device,
        parallel=SINGLE_DEVICE,
        backend=backend,
        quantization=resolve_scheme(None, path),
    )
    spec = KVCacheSpec.for_model(config, torch.bfloat16)
    caches = spec.allocate(NUM_BLOCKS, BLOCK_SIZE, device)
    return ModelRunner(model, backend, caches, BLOCK_SIZE, device)


def greedy(runner: ModelRunner, prompts: list[list[int]]) -> list[list[int]]:
    scheduler = Scheduler(
        SchedulerLimits(4096, max_prompt_tokens_while_decoding=4096),
        KVCacheManager(NUM_BLOCKS, BLOCK_SIZE, prefix_caching=False),
    )
    params = SamplingParams(max_new_tokens=NUM_TOKENS, ignore_eos=True)
    requests = [Request(str(i), prompt, params) for i, prompt in enumerate(prompts)]
    for request in requests:
        scheduler.add_request(request)
    while scheduler.has_work:
        plan = scheduler.schedule()
        scheduler.update(plan, runner.execute(plan))
    return [request.output_token_ids for request in requests]


if __name__ == "__main__":
    main()
