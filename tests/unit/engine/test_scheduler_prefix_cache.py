"""Scheduler with prefix caching: an admitted request starts after its cached prefix, which
costs no step budget; a preempted request reuses its own blocks when they survive; requests
that need every position compute from 0 yet still feed the cache."""

import itertools

from sluice.engine.request import Request
from sluice.sampling_params import SamplingParams
from tests.unit.engine.scheduler_driver import (
    FakeRunner,
    drain,
    make_request,
    make_scheduler,
    run_step,
)


def test_scheduler_starts_a_request_after_its_cached_prefix_outside_the_budget() -> None:
    scheduler = make_scheduler(num_blocks=16, block_size=4, max_step_tokens=8, prefix_caching=True)
    runner = FakeRunner()
    scheduler.add_request(make_request("a", 20, max_new_tokens=1))
    drain(scheduler, runner)
    b = Request("b", list(range(1000, 1016)) + [7, 7, 7, 7], SamplingParams(max_new_tokens=1))
    scheduler.add_request(b)

    plan, outputs = run_step(scheduler, runner)

    (scheduled,) = plan.requests
    assert scheduled.num_computed_tokens == 16
    assert len(scheduled.token_ids) == 4  # within one 8-token step, sampling at once
    assert scheduled.sampling is not None and len(outputs) == 1
    stats = scheduler.kv_cache.stats
    assert (stats.queried_tokens, stats.hit_tokens) == (20 + 20, 16)


def test_scheduler_requests_sharing_a_prefix_hold_the_same_blocks() -> None:
    scheduler = make_scheduler(num_blocks=16, block_size=4, prefix_caching=True)
    runner = FakeRunner()
    a = make_request("a", 10, max_new_tokens=6)
    scheduler.add_request(a)
    run_step(scheduler, runner)
    b = make_request("b", 12, max_new_tokens=6)
    scheduler.add_request(b)

    run_step(scheduler, runner)

    assert b.block_ids[:2] == a.block_ids[:2]
    assert b.block_ids[2] != a.block_ids[2]  # a's third block is its own, still being filled
    drain(scheduler, runner)
    assert scheduler.kv_cache.num_free_blocks == 16


def test_scheduler_preempted_request_reuses_its_own_cached_blocks() -> None:
    scheduler = make_scheduler(num_blocks=5, block_size=4, max_step_tokens=16, prefix_caching=True)
    runner = FakeRunner(itertools.count(100))
    a = make_request("a", 6, max_new_tokens=6)  # never needs more than 3 blocks
    b = make_request("b", 6, max_new_tokens=8, first_token=2000)
    scheduler.add_request(a)
    scheduler.add_request(b)
    for _ in range(4):  # step 4: a takes the last free block, b needs one too and is preempted
        run_step(scheduler, runner)
    assert b.num_preemptions == 1
    known = b.prompt_token_ids + b.output_token_ids

    drain(scheduler, runner)

    recompute = next(r for plan in runner.plans[4:] for r in plan.requests if r.request_id == "b")
    assert recompute.num_computed_tokens == 8  # both of its full blocks survived
    assert recompute.token_ids == tuple(known[8:])
    assert len(b.output_token_ids) == 8


def test_scheduler_penalised_request_computes_from_zero_but_feeds_the_cache() -> None:
    scheduler = make_scheduler(num_blocks=16, block_size=4, prefix_caching=True)
    runner = FakeRunner()
    penalised = SamplingParams(max_new_tokens=1, repetition_penalty=1.3)
    scheduler.add_request(Request("p", list(range(1000, 1010)), penalised))
    plan, _ = run_step(scheduler, runner)
    assert plan.requests[0].num_computed_tokens == 0
    scheduler.add_request(Request("q", list(range(1000, 1010)), penalised))
    scheduler.add_request(make_request("plain", 10, max_new_tokens=1))

    plan, _ = run_step(scheduler, runner)

    assert [(r.request_id, r.num_computed_tokens) for r in plan.requests] == [
        ("q", 0),
        ("plain", 8),
    ]
    assert all(r.counts_tokens for r in plan.requests if r.request_id == "q")
