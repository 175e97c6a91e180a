"""Drafts from a draft model (`--speculator-model-id`) on the real scheduler and runner with the
embedded SmolLM2 weights in bfloat16: with the model as its own draft every draft is accepted;
with a perturbed copy some are rejected; either way greedy output equals decoding without
drafts, and seeded sampled requests reproduce. The draft computes only for drafting requests,
and a prefix-cache hit spares it the blocks it computed before, never the others."""

from collections.abc import Iterator

import pytest
import torch
from transformers import AutoTokenizer

from sluice.bench.workloads import load_workload
from sluice.engine.kv_cache.manager import KVCacheManager
from sluice.model.kernel_packing import pack_dense_weights, packs_weights
from sluice.model.runner import ModelRunner
from sluice.model.step import ScheduledRequest
from sluice.sampling_params import SamplingParams
from sluice.speculative.draft_cost import DraftCost
from sluice.speculative.draft_model import DraftModel
from sluice.weights.sources import resolve_model
from tests.model.runner_driver import (
    BLOCK_SIZE,
    Generated,
    build_draft_model,
    build_runner,
    generate,
)

NUM_BLOCKS = 64
MAX_NEW_TOKENS = 16
SPECULATE = 3
GREEDY = SamplingParams(max_new_tokens=MAX_NEW_TOKENS, ignore_eos=True)


@pytest.fixture(scope="module")
def runner() -> ModelRunner:
    return build_runner(resolve_model().path, torch.bfloat16, num_blocks=NUM_BLOCKS)


@pytest.fixture(scope="module")
def draft_model() -> DraftModel:
    return build_draft_model(resolve_model().path, torch.bfloat16, NUM_BLOCKS)


@pytest.fixture
def with_draft(
    runner: ModelRunner, draft_model: DraftModel, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModelRunner]:
    _untimed(draft_model, monkeypatch)
    runner.draft_model = draft_model
    yield runner
    runner.draft_model = None


def _untimed(draft_model: DraftModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """Leave the draft's cost unmeasured, so that draft counts do not vary with timing (a
    model drafting for itself costs about a step a pass, which would stop its drafts)."""
    monkeypatch.setattr(draft_model, "observe_target_step", lambda step_s: None)
    monkeypatch.setattr(draft_model, "cost", DraftCost())


@pytest.fixture(scope="module")
def prompts() -> list[list[int]]:
    tokenizer = AutoTokenizer.from_pretrained(resolve_model().path)
    return [tokenizer(text)["input_ids"] for text in load_workload("w3").prompts[:2]]


@pytest.fixture(scope="module")
def plain_outputs(runner: ModelRunner, prompts: list[list[int]]) -> list[list[int]]:
    return generate(runner, prompts, [GREEDY] * len(prompts), run="plain").outputs


@pytest.mark.slow
def test_the_model_as_its_own_draft_gets_every_draft_accepted(
    with_draft: ModelRunner, prompts: list[list[int]], plain_outputs: list[list[int]]
) -> None:
    speculated = generate(with_draft, prompts, [GREEDY] * 2, run="self", speculate=SPECULATE)

    assert speculated.num_drafted >= len(prompts) * MAX_NEW_TOKENS // 2
    assert speculated.num_accepted == speculated.num_drafted
    assert speculated.outputs == plain_outputs


@pytest.mark.slow
def test_seeded_sampled_requests_with_model_drafts_are_reproducible(
    with_draft: ModelRunner, prompts: list[list[int]]
) -> None:
    sampled = [
        SamplingParams(max_new_tokens=MAX_NEW_TOKENS, do_sample=True, temperature=0.7, seed=3 + i)
        for i in range(len(prompts))
    ]

    first = generate(with_draft, prompts, sampled, run="first", speculate=SPECULATE)
    second = generate(with_draft, prompts, sampled, run="second", speculate=SPECULATE)

    assert first.num_accepted > 0
    assert first.outputs == second.outputs
    assert all(len(output) == MAX_NEW_TOKENS for output in first.outputs)


@pytest.mark.slow
def test_a_perturbed_draft_gets_some_drafts_rejected_and_changes_no_output(
    runner: ModelRunner,
    prompts: list[list[int]],
    plain_outputs: list[list[int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = resolve_model().path
    perturbed = build_draft_model(path, torch.bfloat16, NUM_BLOCKS, pack_weights=False)
    _untimed(perturbed, monkeypatch)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # noise of 15% of each weight's spread: it still guesses often
        for param in perturbed.model.parameters():
            spread = param.float().std().item()
            noise = torch.randn(param.shape, generator=generator) * 0.15 * spread
            param.add_(noise.to(param.device, param.dtype))
    if packs_weights(torch.bfloat16, runner.device):
        pack_dense_weights(perturbed.model)
    runner.draft_model = perturbed
    try:
        speculated = generate(runner, prompts, [GREEDY] * 2, run="perturbed", speculate=SPECULATE)
    finally:
        runner.draft_model = None

    assert 0 < speculated.num_accepted < speculated.num_drafted
    assert speculated.outputs == plain_outputs


@pytest.mark.slow
def test_the_draft_computes_only_for_drafting_requests_and_reuses_its_cached_prefixes(
    with_draft: ModelRunner,
    prompts: list[list[int]],
    plain_outputs: list[list[int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    draft_model = with_draft.draft_model
    assert draft_model is not None
    computed: list[int] = []
    forward = draft_model._forward

    def counting_forward(requests: tuple[ScheduledRequest, ...]) -> torch.Tensor:
        computed.append(sum(len(r.token_ids) for r in requests))
        return forward(requests)

    monkeypatch.setattr(draft_model, "_forward", counting_forward)
    kv_cache = KVCacheManager(NUM_BLOCKS, BLOCK_SIZE)  # with prefix caching
    prompt, expected = prompts[:1], plain_outputs[:1]

    def run(name: str, speculate: int) -> tuple[Generated, int, int]:
        computed.clear()
        hits_before = kv_cache.stats.hit_tokens
        generated = generate(
            with_draft, prompt, [GREEDY], run=name, speculate=speculate, kv_cache=kv_cache
        )
        assert generated.outputs == expected
        assert generated.num_accepted == generated.num_drafted
        return generated, sum(computed), kv_cache.stats.hit_tokens - hits_before

    _, cold_cost, _ = run("cold", speculate=0)
    assert cold_cost == 0  # no step drafted: the draft model never ran

    # The target's cache holds the prompt's blocks, the draft's does not: it computes them.
    first, first_cost, first_hits = run("first", speculate=SPECULATE)
    assert first_hits > 0 and first.num_drafted > 0
    assert first_cost >= len(prompt[0])

    # Now the draft computed them too: a hit on them spares its work as well.
    second, second_cost, second_hits = run("second", speculate=SPECULATE)
    assert second_hits >= first_hits and second.num_drafted == first.num_drafted
    assert second_cost <= first_cost - first_hits
