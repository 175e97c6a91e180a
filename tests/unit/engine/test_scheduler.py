"""Scheduler: token budget, running before waiting, chunked prefill, finishing, preemption with
recompute, abort; and a property test over random add/abort/step sequences."""

import itertools

import msgspec
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sluice.engine.request import Request, RequestStatus
from sluice.engine.scheduler import Scheduler
from sluice.ipc.messages import FinishReason, RequestOutput
from sluice.model.step import RunnerOutput, SampledToken, StepPlan
from sluice.sampling_params import SamplingParams
from tests.unit.engine.scheduler_driver import (
    EOS,
    LOGPROB,
    FakeRunner,
    check_invariants,
    drain,
    make_request,
    make_scheduler,
    run_step,
)


def _ids(plan: StepPlan) -> list[str]:
    return [r.request_id for r in plan.requests]


def test_scheduler_splits_long_prompt_into_budget_chunks_and_samples_on_last() -> None:
    scheduler = make_scheduler(num_blocks=8, max_step_tokens=8)
    request = make_request("a", 20, max_new_tokens=2)
    scheduler.add_request(request)
    runner = FakeRunner()

    chunks = []
    for _ in range(3):
        plan, outputs = run_step(scheduler, runner)
        (scheduled,) = plan.requests
        chunks.append((scheduled.num_computed_tokens, len(scheduled.token_ids)))
        assert (scheduled.sampling is not None) == (len(outputs) == 1)

    assert chunks == [(0, 8), (8, 8), (16, 4)]
    assert [r.requests[0].sampling is not None for r in runner.plans] == [False, False, True]
    assert request.output_token_ids == [7]
    assert request.num_computed_tokens == 20


def test_scheduler_gives_running_requests_budget_before_waiting_ones() -> None:
    scheduler = make_scheduler(num_blocks=8, max_step_tokens=4)
    runner = FakeRunner()
    scheduler.add_request(make_request("a", 3, max_new_tokens=8))
    run_step(scheduler, runner)
    scheduler.add_request(make_request("b", 10))

    plan, _ = run_step(scheduler, runner)

    assert _ids(plan) == ["a", "b"]
    assert [len(r.token_ids) for r in plan.requests] == [1, 3]


def test_scheduler_running_prompt_chunk_can_use_the_whole_budget() -> None:
    scheduler = make_scheduler(num_blocks=8, max_step_tokens=4)
    runner = FakeRunner()
    scheduler.add_request(make_request("a", 10))
    run_step(scheduler, runner)
    waiting = make_request("b", 2)
    scheduler.add_request(waiting)

    plan, _ = run_step(scheduler, runner)

    assert _ids(plan) == ["a"]
    assert plan.requests[0].num_computed_tokens == 4
    assert list(scheduler.waiting) == [waiting]


def test_scheduler_admits_waiting_requests_in_arrival_order() -> None:
    scheduler = make_scheduler(num_blocks=8, max_step_tokens=8)
    for request_id, prompt_len in (("a", 5), ("b", 5), ("c", 2)):
        scheduler.add_request(make_request(request_id, prompt_len))

    plan, _ = run_step(scheduler, FakeRunner())

    assert _ids(plan) == ["a", "b"]
    assert [len(r.token_ids) for r in plan.requests] == [5, 3]
    assert [r.request_id for r in scheduler.waiting] == ["c"]


def test_scheduler_admission_stops_at_first_request_without_blocks() -> None:
    scheduler = make_scheduler(num_blocks=4, block_size=4, max_step_tokens=32)
    runner = FakeRunner()
    scheduler.add_request(make_request("a", 12))  # 3 of the 4 blocks
    run_step(scheduler, runner)
    scheduler.add_request(make_request("b", 8))  # needs 2 blocks: does not fit
    scheduler.add_request(make_request("c", 2))  # would fit, but waits behind b

    plan, _ = run_step(scheduler, runner)

    assert _ids(plan) == ["a"]
    assert [r.request_id for r in scheduler.waiting] == ["b", "c"]


def test_scheduler_request_arriving_mid_generation_joins_next_step() -> None:
    scheduler = make_scheduler(num_blocks=8, max_step_tokens=16)
    runner = FakeRunner()
    scheduler.add_request(make_request("a", 4, max_new_tokens=8))
    run_step(scheduler, runner)
    scheduler.add_request(make_request("b", 3))

    plan, outputs = run_step(scheduler, runner)

    assert _ids(plan) == ["a", "b"]
    decode, prefill = plan.requests
    assert (decode.num_computed_tokens, decode.token_ids) == (4, (7,))
    assert (prefill.num_computed_tokens, len(prefill.token_ids)) == (0, 3)
    assert [o.request_id for o in outputs] == ["a", "b"]


def test_scheduler_finishes_at_max_new_tokens_and_frees_blocks() -> None:
    scheduler = make_scheduler(num_blocks=8)
    runner = FakeRunner(itertools.count(10))
    request = make_request("a", 5, max_new_tokens=3)
    scheduler.add_request(request)

    outputs = [
        [msgspec.structs.replace(o, queue_s=None) for o in run_step(scheduler, runner)[1]]
        for _ in range(3)
    ]

    assert outputs == [
        [RequestOutput("a", [10], [LOGPROB])],
        [RequestOutput("a", [11], [LOGPROB])],
        [RequestOutput("a", [12], [LOGPROB], FinishReason.LENGTH)],
    ]
    assert request.status is RequestStatus.FINISHED
    assert request.block_ids == []
    assert scheduler.kv_cache.num_free_blocks == 8
    assert not scheduler.has_work
    assert scheduler.schedule().finished_request_ids == ("a",)
    assert scheduler.schedule().finished_request_ids == ()


def test_scheduler_finishes_on_stop_token() -> None:
    scheduler = make_scheduler()
    scheduler.add_request(make_request("a", 3, max_new_tokens=10, stop_token_ids=(EOS,)))

    outputs = drain(scheduler, FakeRunner([7, 8, EOS, 9]))

    assert [o.token_ids[0] for o in outputs["a"]] == [7, 8, EOS]
    assert [o.finish_reason for o in outputs["a"]] == [None, None, FinishReason.EOS_TOKEN]
    assert scheduler.kv_cache.num_free_blocks == scheduler.kv_cache.num_blocks
    assert scheduler.schedule().finished_request_ids == ("a",)


def test_scheduler_ignore_eos_generates_exactly_max_new_tokens() -> None:
    scheduler = make_scheduler()
    scheduler.add_request(
        make_request("a", 3, max_new_tokens=4, stop_token_ids=(EOS,), ignore_eos=True)
    )

    outputs = drain(scheduler, FakeRunner(itertools.repeat(EOS)))

    assert len(outputs["a"]) == 4
    assert outputs["a"][-1].finish_reason is FinishReason.LENGTH
    assert scheduler.kv_cache.num_free_blocks == scheduler.kv_cache.num_blocks
    assert scheduler.schedule().finished_request_ids == ("a",)


def test_scheduler_finished_request_leaves_while_others_continue() -> None:
    scheduler = make_scheduler(num_blocks=8, block_size=4)
    runner = FakeRunner()
    long = make_request("long", 4, max_new_tokens=5)
    short = make_request("short", 4, max_new_tokens=1)
    scheduler.add_request(long)
    scheduler.add_request(short)

    _, outputs = run_step(scheduler, runner)

    assert [o.finish_reason for o in outputs] == [None, FinishReason.LENGTH]
    assert scheduler.running == [long]
    assert scheduler.kv_cache.num_free_blocks == 8 - len(long.block_ids)
    plan, _ = run_step(scheduler, runner)
    assert _ids(plan) == ["long"]
    assert plan.finished_request_ids == ("short",)


def _preemption_scenario() -> tuple[Scheduler, FakeRunner, Request, Request]:
    """Two 6-token prompts generating 8 tokens each in a 16-slot cache: after three steps both
    hold 2 full blocks, and the next step's decode of `a` needs a third."""
    scheduler = make_scheduler(num_blocks=4, block_size=4, max_step_tokens=16)
    runner = FakeRunner(itertools.count(100))
    a = make_request("a", 6, max_new_tokens=8)
    b = make_request("b", 6, max_new_tokens=8)
    scheduler.add_request(a)
    scheduler.add_request(b)
    for _ in range(3):
        plan, _ = run_step(scheduler, runner)
        assert _ids(plan) == ["a", "b"]
    assert scheduler.kv_cache.num_free_blocks == 0
    return scheduler, runner, a, b


def test_scheduler_preempts_youngest_running_request_when_blocks_run_out() -> None:
    scheduler, runner, a, b = _preemption_scenario()
    generated = list(b.output_token_ids)

    plan, _ = run_step(scheduler, runner)

    assert _ids(plan) == ["a"]
    assert list(scheduler.waiting) == [b]
    assert b.status is RequestStatus.WAITING
    assert (b.num_computed_tokens, b.block_ids, b.num_preemptions) == (0, [], 1)
    assert b.output_token_ids == generated
    assert scheduler.num_preemptions == 1
    assert len(a.block_ids) == 3


def test_scheduler_preempted_request_recomputes_and_every_request_completes() -> None:
    scheduler, runner, a, b = _preemption_scenario()
    prompt_and_generated = tuple(b.prompt_token_ids + b.output_token_ids)

    outputs = drain(scheduler, runner)

    recompute = next(r for plan in runner.plans[4:] for r in plan.requests if r.request_id == "b")
    assert recompute.num_computed_tokens == 0
    assert recompute.token_ids == prompt_and_generated
    assert recompute.sampling is not None
    for request in (a, b):
        assert len(request.output_token_ids) == 8
        assert request.finish_reason is FinishReason.LENGTH
    assert len(outputs["a"]) == len(outputs["b"]) == 8 - 3  # 3 each before the scenario ended
    assert scheduler.kv_cache.num_free_blocks == 4


def test_scheduler_preempted_request_is_readmitted_before_newer_ones() -> None:
    scheduler, runner, _, b = _preemption_scenario()
    run_step(scheduler, runner)  # preempts b
    scheduler.add_request(make_request("c", 2))

    readmitted = None
    while readmitted is None:
        plan, _ = run_step(scheduler, runner)
        if "b" in _ids(plan) or "c" in _ids(plan):
            readmitted = _ids(plan)

    assert readmitted == ["b", "c"]


def test_scheduler_admits_nothing_in_a_step_that_preempted() -> None:
    scheduler = make_scheduler(num_blocks=3, block_size=4, max_step_tokens=4)
    runner = FakeRunner()
    scheduler.add_request(make_request("a", 2, max_new_tokens=20))
    run_step(scheduler, runner)
    c = make_request("c", 8)
    scheduler.add_request(c)
    run_step(scheduler, runner)  # a decodes, c prefills 3 tokens (1 block)
    run_step(scheduler, runner)  # c prefills 3 more (2 blocks): the cache is full

    plan, _ = run_step(scheduler, runner)  # a needs a block: c is preempted

    assert _ids(plan) == ["a"]
    assert list(scheduler.waiting) == [c]
    # c's next chunk would fit in what the preemption left over: only the rule keeps it out.
    remaining_budget = scheduler.limits.max_step_tokens - plan.num_tokens
    assert scheduler.kv_cache.blocks_needed(c, remaining_budget) <= (
        scheduler.kv_cache.num_free_blocks
    )
    assert _ids(run_step(scheduler, runner)[0]) == ["a", "c"]


def test_scheduler_abort_of_waiting_and_running_requests_frees_their_blocks() -> None:
    scheduler = make_scheduler(num_blocks=8, max_step_tokens=6)
    runner = FakeRunner()
    scheduler.add_request(make_request("running", 6))
    scheduler.add_request(make_request("waiting", 10))
    run_step(scheduler, runner)
    assert [r.request_id for r in scheduler.waiting] == ["waiting"]
    free_before_abort = scheduler.kv_cache.num_free_blocks

    scheduler.abort(["waiting"])
    assert scheduler.kv_cache.num_free_blocks == free_before_abort
    scheduler.abort(["running", "unknown", "waiting"])
    check_invariants(scheduler)

    assert scheduler.kv_cache.num_free_blocks == 8
    assert not scheduler.has_work
    plan = scheduler.schedule()
    assert plan.requests == ()
    assert plan.finished_request_ids == ("waiting", "running")


def test_scheduler_drops_samples_of_requests_aborted_during_the_step() -> None:
    scheduler = make_scheduler(num_blocks=8)
    runner = FakeRunner()
    scheduler.add_request(make_request("a", 5))
    scheduler.add_request(make_request("b", 5))
    plan = scheduler.schedule()

    scheduler.abort(["a"])
    outputs = scheduler.update(plan, runner.execute(plan))

    assert [o.request_id for o in outputs] == ["b"]
    check_invariants(scheduler)
    assert scheduler.running[0].num_computed_tokens == 5


_MAX_PROMPT, _MAX_NEW = 12, 8

_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"),
            st.integers(1, _MAX_PROMPT),
            st.integers(1, _MAX_NEW),
            st.booleans(),
        ),
        st.tuples(st.just("abort"), st.integers(0, 40), st.just(0), st.just(False)),
        st.tuples(st.just("step"), st.sampled_from([7, 8, EOS]), st.just(0), st.just(False)),
    ),
    min_size=5,
    max_size=50,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    block_size=st.sampled_from([1, 2, 4, 8]),
    extra_blocks=st.integers(0, 3),
    max_step_tokens=st.integers(1, 24),
    prefix_caching=st.booleans(),
    ops=_ops,
)
def test_scheduler_random_add_abort_step_keep_block_invariants(
    block_size: int,
    extra_blocks: int,
    max_step_tokens: int,
    prefix_caching: bool,
    ops: list[tuple[str, int, int, bool]],
) -> None:
    # The cache always holds the longest single request, so every request can finish.
    # The prompts share their first tokens, so with prefix caching requests share blocks.
    num_blocks = -(-(_MAX_PROMPT + _MAX_NEW) // block_size) + extra_blocks
    scheduler = make_scheduler(
        num_blocks=num_blocks,
        block_size=block_size,
        max_step_tokens=max_step_tokens,
        prefix_caching=prefix_caching,
    )
    added: list[Request] = []
    aborted: set[str] = set()
    outputs: dict[str, list[RequestOutput]] = {}

    def step(token: int) -> None:
        for output in run_step(scheduler, FakeRunner(itertools.repeat(token)))[1]:
            assert output.request_id not in aborted
            outputs.setdefault(output.request_id, []).append(output)

    for op, a, b, uses_eos in ops:
        if op == "add":
            request = make_request(
                str(len(added)),
                a,
                max_new_tokens=b,
                stop_token_ids=(EOS,) if uses_eos else (),
            )
            added.append(request)
            scheduler.add_request(request)
        elif op == "abort" and a < len(added):
            request = added[a]
            if request.status is not RequestStatus.FINISHED:
                aborted.add(request.request_id)
            scheduler.abort([request.request_id])
        elif op == "step":
            step(a)
        check_invariants(scheduler)

    for _ in range(10_000):  # bounded: a livelock fails instead of hanging
        if not scheduler.has_work:
            break
        step(7)
    assert not scheduler.has_work

    event(f"preempted: {scheduler.num_preemptions > 0}")
    event(f"prefix hits: {scheduler.kv_cache.stats.hit_tokens > 0}")
    assert scheduler.kv_cache.num_free_blocks == num_blocks
    for request in added:
        assert request.status is RequestStatus.FINISHED
        assert request.block_ids == []
        produced = outputs.get(request.request_id, [])
        assert [o.token_ids[0] for o in produced] == request.output_token_ids
        if request.request_id in aborted:
            assert request.finish_reason is None
            continue
        assert produced[-1].finish_reason is request.finish_reason is not None
        assert all(o.finish_reason is None for o in produced[:-1])
        if request.finish_reason is FinishReason.LENGTH:
            assert len(produced) == request.sampling.max_new_tokens
        else:
            assert produced[-1].token_ids == [EOS]


def test_scheduler_flags_penalised_and_prompt_logprob_requests_on_every_chunk() -> None:
    scheduler = make_scheduler(num_blocks=8, max_step_tokens=8)
    wanted = SamplingParams(max_new_tokens=3, repetition_penalty=1.2, prompt_logprobs=True)
    scheduler.add_request(Request("a", list(range(1000, 1020)), wanted))
    scheduler.add_request(make_request("plain", 2))
    runner = FakeRunner()

    plans = [run_step(scheduler, runner)[0] for _ in range(5)]

    described = [r for plan in plans for r in plan.requests if r.request_id == "a"]
    assert all(r.counts_tokens for r in described)
    # Prompt logprobs while the prompt is prefilled (3 chunks), not once a token exists.
    assert [r.wants_prompt_logprobs for r in described] == [True, True, True, False, False]
    plain = [r for plan in plans for r in plan.requests if r.request_id == "plain"]
    assert not any(r.counts_tokens or r.wants_prompt_logprobs for r in plain)


def test_scheduler_passes_top_tokens_and_prompt_logprobs_to_the_output() -> None:
    scheduler = make_scheduler()
    scheduler.add_request(make_request("a", 3))
    plan = scheduler.schedule()
    sampled = SampledToken("a", 7, -0.5, (7, 8), (-0.5, -1.5), (-2.0, -3.0))

    (output,) = scheduler.update(plan, RunnerOutput((sampled,)))

    assert output.top_token_ids == [[7, 8]] and output.top_logprobs == [[-0.5, -1.5]]
    assert output.prompt_logprobs == [-2.0, -3.0]
