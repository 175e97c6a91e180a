"""Drives the real Scheduler and KVCacheManager with fabricated RunnerOutputs: no model, no
tensors. `check_plan` and `check_invariants` state what must hold after every step."""

import itertools
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import Future

import numpy as np

from sluice.engine.kv_cache.manager import KVCacheManager
from sluice.engine.request import Request, RequestStatus
from sluice.engine.scheduler import Scheduler, SchedulerLimits
from sluice.ipc.messages import RequestOutput
from sluice.model.sampling.sampler import TokenMasks
from sluice.model.step import RunnerOutput, SampledToken, StepPlan
from sluice.sampling_params import SamplingParams

EOS = 2
LOGPROB = -0.5


def make_scheduler(
    *,
    num_blocks: int = 8,
    block_size: int = 4,
    max_step_tokens: int = 16,
    max_prompt_tokens_while_decoding: int | None = None,
    prefix_caching: bool = False,
) -> Scheduler:
    """Prefix caching is off unless asked for: the prompts of `make_request` all share their
    first tokens, and most tests are about scheduling without reuse. Steps beside decodes get
    the whole budget unless `max_prompt_tokens_while_decoding` says otherwise."""
    return Scheduler(
        SchedulerLimits(
            max_step_tokens=max_step_tokens,
            max_prompt_tokens_while_decoding=max_prompt_tokens_while_decoding or max_step_tokens,
        ),
        KVCacheManager(num_blocks, block_size, prefix_caching=prefix_caching),
    )


def make_request(
    request_id: str,
    prompt_len: int,
    *,
    max_new_tokens: int = 4,
    stop_token_ids: tuple[int, ...] = (),
    ignore_eos: bool = False,
    first_token: int = 1000,
) -> Request:
    """A greedy request whose prompt tokens are `first_token`, `first_token` + 1, ... (never a
    stop token)."""
    sampling = SamplingParams(
        max_new_tokens=max_new_tokens, stop_token_ids=stop_token_ids, ignore_eos=ignore_eos
    )
    return Request(request_id, list(range(first_token, first_token + prompt_len)), sampling)


class FakeRunner:
    """Stands in for ModelRunner: every request that samples gets the next of `tokens`, or,
    where a grammar mask forbids that token, the lowest token id the mask allows."""

    def __init__(self, tokens: Iterable[int] = itertools.repeat(7)) -> None:
        self._tokens: Iterator[int] = iter(tokens)
        self.plans: list[StepPlan] = []
        self.masks: list[TokenMasks | None] = []

    def execute(
        self, plan: StepPlan, token_masks: Future[TokenMasks] | None = None
    ) -> RunnerOutput:
        self.plans.append(plan)
        masks = token_masks.result() if token_masks is not None else None
        self.masks.append(masks)
        sampling = [r for r in plan.requests if r.sampling is not None]
        token_ids = [next(self._tokens) for _ in sampling]
        if masks is not None:
            for row, words in zip(masks.rows, masks.bitmask.numpy(), strict=True):
                allowed = np.unpackbits(words.view(np.uint8), bitorder="little").nonzero()[0]
                if token_ids[row] not in allowed:
                    token_ids[row] = int(allowed[0])
        return RunnerOutput(
            sampled=tuple(
                SampledToken(r.request_id, token_id, LOGPROB)
                for r, token_id in zip(sampling, token_ids, strict=True)
            )
        )


def run_step(scheduler: Scheduler, runner: FakeRunner) -> tuple[StepPlan, list[RequestOutput]]:
    plan = scheduler.schedule()
    check_plan(scheduler, plan)
    outputs = scheduler.update(plan, runner.execute(plan))
    check_invariants(scheduler)
    return plan, outputs


def drain(
    scheduler: Scheduler, runner: FakeRunner, max_steps: int = 1000
) -> dict[str, list[RequestOutput]]:
    """Step until no request is left; every output, by request id."""
    outputs: dict[str, list[RequestOutput]] = {}
    for _ in range(max_steps):
        if not scheduler.has_work:
            return outputs
        for output in run_step(scheduler, runner)[1]:
            outputs.setdefault(output.request_id, []).append(output)
    raise AssertionError(f"requests still unfinished after {max_steps} steps")


def check_plan(scheduler: Scheduler, plan: StepPlan) -> None:
    """A plan fits the budget and describes each scheduled request exactly."""
    assert plan.num_tokens <= scheduler.limits.max_step_tokens
    ids = [r.request_id for r in plan.requests]
    assert len(ids) == len(set(ids))
    running = {r.request_id: r for r in scheduler.running}
    block_size = scheduler.kv_cache.block_size
    for scheduled in plan.requests:
        request = running[scheduled.request_id]
        known = request.prompt_token_ids + request.output_token_ids
        start, count = scheduled.num_computed_tokens, len(scheduled.token_ids)
        assert count >= 1
        assert start == request.num_computed_tokens
        assert scheduled.token_ids == tuple(known[start : start + count])
        assert scheduled.block_ids == tuple(request.block_ids)
        assert len(scheduled.block_ids) * block_size >= start + count
        assert (scheduled.sampling is not None) == (start + count == len(known))


def check_invariants(scheduler: Scheduler) -> None:
    """Each block is free or held: its ref count is the number of live requests holding it, a
    request holds a block at most once, and only full, computed blocks are shared or cached."""
    kv_cache = scheduler.kv_cache
    pool, block_size = kv_cache.pool, kv_cache.block_size
    live = list(scheduler.running) + list(scheduler.waiting)
    assert len({r.request_id for r in live}) == len(live)
    holders = Counter(block for r in live for block in r.block_ids)
    for request in live:
        assert len(set(request.block_ids)) == len(request.block_ids), "a block is held twice"
    assert len(holders) + pool.num_free_blocks == pool.num_blocks
    for block in range(pool.num_blocks):
        assert pool.ref_count(block) == holders[block]
    for request in scheduler.waiting:
        assert request.status is RequestStatus.WAITING
        assert request.block_ids == []
        assert request.num_computed_tokens == 0
    for request in scheduler.running:
        assert request.status is RequestStatus.RUNNING
        assert len(request.block_ids) * block_size >= request.num_computed_tokens
        assert request.num_cached_blocks <= request.num_computed_tokens // block_size
        for index, block in enumerate(request.block_ids):
            if index >= request.num_computed_tokens // block_size:
                assert holders[block] == 1, "a block still being written is shared"
                cache = kv_cache.prefix_cache
                assert cache is None or cache.hash_of(block) is None, "a partial block is cached"
    if kv_cache.prefix_cache is None:
        assert all(holders[block] == 1 for block in holders)
