"""Prefix caching changes no output: the real scheduler and runner on the embedded SmolLM2
weights in float32 produce the same greedy tokens for requests sharing a long prefix whether
their shared blocks are reused or computed again."""

import pytest
import torch
from transformers import AutoTokenizer

from sluice.engine.kv_cache.manager import KVCacheManager
from sluice.engine.request import Request
from sluice.engine.scheduler import Scheduler, SchedulerLimits
from sluice.model.runner import ModelRunner
from sluice.sampling_params import SamplingParams
from sluice.weights.sources import resolve_model
from tests.model.runner_driver import BLOCK_SIZE, build_runner

SHARED = (
    "You are a careful assistant for a company that builds canals, locks and sluice gates. "
    "Answer in plain English, cite the relevant maintenance rule by number, and never guess a "
    "water level. Rule 1: inspect every gate before the spring floods. Rule 2: grease the "
    "hinges monthly. Rule 3: log each opening with the time, the operator and the reason. "
    "Rule 4: two operators must agree before a gate opens during a storm warning. Rule 5: "
    "report cracks wider than two millimetres the same day. Rule 6: keep the spillway clear of "
    "debris, branches and ice. Rule 7: test the backup generator every Sunday at noon. Rule 8: "
    "replace worn seals before they leak. Rule 9: train new staff on the manual override. "
    "Rule 10: close the upstream gate first and open it last. "
) * 2
QUESTIONS = [
    "Which rule covers storm warnings?",
    "What must be logged when a gate opens?",
    "How often are the hinges greased?",
]
MAX_NEW_TOKENS = 12


@pytest.fixture(scope="module")
def runner() -> ModelRunner:
    return build_runner(resolve_model().path, torch.float32, num_blocks=96)


@pytest.fixture(scope="module")
def prompts() -> list[list[int]]:
    tokenizer = AutoTokenizer.from_pretrained(resolve_model().path)
    ids = [tokenizer(SHARED + question)["input_ids"] for question in QUESTIONS]
    assert all(p[:200] == ids[0][:200] for p in ids)
    return ids


def _generate(
    runner: ModelRunner, prompts: list[list[int]], *, prefix_caching: bool
) -> tuple[list[list[int]], int]:
    """Greedy outputs: the first prompt alone, then the others together. Returns them and
    the tokens the prefix cache supplied."""
    kv_cache = KVCacheManager(96, BLOCK_SIZE, prefix_caching=prefix_caching)
    scheduler = Scheduler(SchedulerLimits(512, max_prompt_tokens_while_decoding=512), kv_cache)
    name = "on" if prefix_caching else "off"
    requests = [
        Request(f"{name}-{i}", prompt, SamplingParams(max_new_tokens=MAX_NEW_TOKENS))
        for i, prompt in enumerate(prompts)
    ]
    for batch in (requests[:1], requests[1:]):
        for request in batch:
            scheduler.add_request(request)
        while scheduler.has_work:
            plan = scheduler.schedule()
            scheduler.update(plan, runner.execute(plan))
    return [r.output_token_ids for r in requests], kv_cache.stats.hit_tokens


@pytest.mark.slow
def test_prefix_cache_keeps_greedy_outputs_of_requests_sharing_a_prefix(
    runner: ModelRunner, prompts: list[list[int]]
) -> None:
    cold, no_hits = _generate(runner, prompts, prefix_caching=False)
    warm, hits = _generate(runner, prompts, prefix_caching=True)

    assert no_hits == 0
    shared_blocks = 200 // BLOCK_SIZE
    assert hits >= 2 * shared_blocks * BLOCK_SIZE  # both later requests reused the prefix
    assert warm == cold
