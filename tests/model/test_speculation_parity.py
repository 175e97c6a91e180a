"""Speculation changes no greedy output: the real scheduler and runner on the embedded SmolLM2
weights in float32 produce the same tokens with n-gram drafts verified in the batch as
without, for a repetitive prompt (many drafts accepted) batched with others that draft little;
in bfloat16 too, for W3's copy-heavy prompts each alone (where rounding that depends on the
rows of a step showed first); and seeded sampled requests with drafts stay reproducible."""

import pytest
import torch
from transformers import AutoTokenizer

from sluice.bench.workloads import load_workload
from sluice.model.runner import ModelRunner
from sluice.sampling_params import SamplingParams
from sluice.weights.sources import resolve_model
from tests.model.runner_driver import (
    build_runner,
    generate,
    skip_unless_batch_invariant,
)

PROMPTS = [
    "<|im_start|>user\nContinue the pattern.<|im_end|>\n<|im_start|>assistant\n"
    + "red blue green " * 4,
    "<|im_start|>user\nRewrite this function, renaming `total` to `acc`.\n\n"
    "def sum_positive(values):\n    total = 0\n    for value in values:\n"
    "        if value > 0:\n            total += value\n    return total\n"
    "<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nWrite a haiku about rivers.<|im_end|>\n<|im_start|>assistant\n",
]
MAX_NEW_TOKENS = 40
NUM_BLOCKS = 96


@pytest.fixture(scope="module")
def runner() -> ModelRunner:
    return build_runner(resolve_model().path, torch.float32, num_blocks=NUM_BLOCKS)


@pytest.fixture(scope="module")
def tokenizer() -> AutoTokenizer:
    return AutoTokenizer.from_pretrained(resolve_model().path)


@pytest.fixture(scope="module")
def prompts(tokenizer: AutoTokenizer) -> list[list[int]]:
    return [tokenizer(prompt)["input_ids"] for prompt in PROMPTS]


@pytest.mark.slow
def test_speculation_keeps_greedy_outputs_and_accepts_drafts_on_copy_heavy_prompts(
    runner: ModelRunner, prompts: list[list[int]]
) -> None:
    greedy = [SamplingParams(max_new_tokens=MAX_NEW_TOKENS, ignore_eos=True)] * len(prompts)

    plain = generate(runner, prompts, greedy, run="plain")
    speculated = generate(runner, prompts, greedy, run="speculated", speculate=4)

    assert plain.num_drafted == 0
    assert speculated.num_accepted >= MAX_NEW_TOKENS // 2  # the pattern goes on: drafts hold
    assert speculated.outputs == plain.outputs


@pytest.mark.slow
def test_seeded_sampled_requests_with_drafts_are_reproducible(
    runner: ModelRunner, prompts: list[list[int]]
) -> None:
    sampled = [
        SamplingParams(max_new_tokens=MAX_NEW_TOKENS, do_sample=True, temperature=0.7, seed=7 + i)
        for i in range(len(prompts))
    ]

    first = generate(runner, prompts, sampled, run="first", speculate=4)
    second = generate(runner, prompts, sampled, run="second", speculate=4)

    assert first.num_accepted > 0
    assert first.outputs == second.outputs
    assert all(len(output) == MAX_NEW_TOKENS for output in first.outputs)


@pytest.mark.slow
def test_speculation_keeps_bfloat16_greedy_outputs(tokenizer: AutoTokenizer) -> None:
    runner = build_runner(resolve_model().path, torch.bfloat16, num_blocks=NUM_BLOCKS)
    skip_unless_batch_invariant(runner, torch.bfloat16)  # drafts verify among other positions
    greedy = [SamplingParams(max_new_tokens=48, ignore_eos=True)]

    for index, text in enumerate(load_workload("w3").prompts[:2]):
        prompt = [tokenizer(text)["input_ids"]]
        plain = generate(runner, prompt, greedy, run=f"plain-{index}")
        speculated = generate(runner, prompt, greedy, run=f"spec-{index}", speculate=4)

        assert speculated.num_accepted > 0
        assert speculated.outputs == plain.outputs, f"W3 prompt {index}"
