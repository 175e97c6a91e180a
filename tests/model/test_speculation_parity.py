"""Speculation changes no greedy output: the real scheduler and runner on the embedded SmolLM2
weights in float32 produce the same tokens with n-gram drafts verified in the batch as
without, for a repetitive prompt (many drafts accepted) batched with others that draft little;
in bfloat16 too, for W3's copy-heavy prompts each alone (where rounding that depends on the
rows of a step showed first); and seeded sampled requests with drafts stay reproducible."""

import pytest
import torch
from transformers import AutoTokenizer

from sluice.bench.workloads import load_workload
from sluice.engine.drafts import Drafter
from sluice.engine.kv_cache.manager import KVCacheManager
from sluice.engine.request import Request
from sluice.engine.scheduler import Scheduler, SchedulerLimits
from sluice.model.runner import ModelRunner
from sluice.sampling_params import SamplingParams
from sluice.weights.sources import resolve_model
from tests.model.runner_driver import BLOCK_SIZE, build_runner

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


def _generate(
    runner: ModelRunner,
    prompts: list[list[int]],
    sampling: list[SamplingParams],
    speculate: int,
    run: str,
) -> tuple[list[list[int]], int]:
    """Outputs of all requests run together, and how many drafts were accepted. `run` keeps
    request ids apart: the runner keeps a seeded request's generator under its id."""
    drafter = Drafter(speculate, max_step_tokens=64) if speculate else None
    scheduler = Scheduler(
        SchedulerLimits(512, max_prompt_tokens_while_decoding=512),
        KVCacheManager(NUM_BLOCKS, BLOCK_SIZE, prefix_caching=False),
        drafter,
    )
    requests = [
        Request(f"{run}-{i}", prompt, params)
        for i, (prompt, params) in enumerate(zip(prompts, sampling, strict=True))
    ]
    for request in requests:
        scheduler.add_request(request)
    accepted = 0
    while scheduler.has_work:
        plan = scheduler.schedule()
        output = runner.execute(plan)
        accepted += sum(len(token.accepted_token_ids) for token in output.sampled)
        scheduler.update(plan, output)
    return [r.output_token_ids for r in requests], accepted


@pytest.mark.slow
def test_speculation_keeps_greedy_outputs_and_accepts_drafts_on_copy_heavy_prompts(
    runner: ModelRunner, prompts: list[list[int]]
) -> None:
    greedy = [SamplingParams(max_new_tokens=MAX_NEW_TOKENS, ignore_eos=True)] * len(prompts)

    plain, none_accepted = _generate(runner, prompts, greedy, speculate=0, run="plain")
    speculated, accepted = _generate(runner, prompts, greedy, speculate=4, run="speculated")

    assert none_accepted == 0
    assert accepted >= MAX_NEW_TOKENS // 2  # the pattern goes on: its drafts hold
    assert speculated == plain


@pytest.mark.slow
def test_seeded_sampled_requests_with_drafts_are_reproducible(
    runner: ModelRunner, prompts: list[list[int]]
) -> None:
    sampled = [
        SamplingParams(max_new_tokens=MAX_NEW_TOKENS, do_sample=True, temperature=0.7, seed=7 + i)
        for i in range(len(prompts))
    ]

    first, accepted = _generate(runner, prompts, sampled, speculate=4, run="first")
    second, _ = _generate(runner, prompts, sampled, speculate=4, run="second")

    assert accepted > 0
    assert first == second
    assert all(len(output) == MAX_NEW_TOKENS for output in first)


@pytest.mark.slow
def test_speculation_keeps_bfloat16_greedy_outputs(tokenizer: AutoTokenizer) -> None:
    runner = build_runner(resolve_model().path, torch.bfloat16, num_blocks=NUM_BLOCKS)
    greedy = [SamplingParams(max_new_tokens=48, ignore_eos=True)]

    for index, text in enumerate(load_workload("w3").prompts[:2]):
        prompt = [tokenizer(text)["input_ids"]]
        plain, _ = _generate(runner, prompt, greedy, speculate=0, run=f"plain-{index}")
        speculated, accepted = _generate(runner, prompt, greedy, speculate=4, run=f"spec-{index}")

        assert accepted > 0
        assert speculated == plain, f"W3 prompt {index}"
