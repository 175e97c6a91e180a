"""EngineCore.step with a real Scheduler and a fake runner: outputs, statistics, and a failing
request that ends alone while the rest of its step and the engine carry on."""

import itertools
from concurrent.futures import Future

import msgspec

from sluice.engine.core import EngineCore
from sluice.engine.executor import LocalExecutor
from sluice.engine.scheduler import Scheduler
from sluice.ipc.messages import AbortRequests, AddRequest, FinishReason, RequestOutput
from sluice.model.sampling.sampler import TokenMasks
from sluice.model.step import RunnerOutput, StepPlan
from sluice.sampling_params import SamplingParams
from tests.unit.engine.scheduler_driver import LOGPROB, FakeRunner, make_scheduler


class FlakyRunner(FakeRunner):
    """Raises on the calls listed in `failing_calls` (0-based), works otherwise."""

    def __init__(self, failing_calls: set[int]) -> None:
        super().__init__(itertools.count(10))
        self.failing_calls = failing_calls
        self.num_calls = 0

    def execute(
        self, plan: StepPlan, token_masks: Future[TokenMasks] | None = None
    ) -> RunnerOutput:
        call, self.num_calls = self.num_calls, self.num_calls + 1
        if call in self.failing_calls:
            raise RuntimeError("device fell over")
        return super().execute(plan, token_masks)


def _engine(runner: FakeRunner, scheduler: Scheduler | None = None) -> EngineCore:
    scheduler = scheduler or make_scheduler(num_blocks=8)
    return EngineCore(scheduler, LocalExecutor(runner), channel=None)  # type: ignore[arg-type]


def _add(request_id: str, prompt_len: int, max_new_tokens: int = 3) -> AddRequest:
    return AddRequest(
        request_id, list(range(1000, 1000 + prompt_len)), SamplingParams(max_new_tokens)
    )


def test_engine_core_handle_adds_and_aborts_requests() -> None:
    engine = _engine(FakeRunner())

    engine.handle(_add("a", 5))
    engine.handle(_add("b", 5))
    assert [r.request_id for r in engine.scheduler.waiting] == ["a", "b"]

    engine.handle(AbortRequests(["a", "unknown"]))
    assert [r.request_id for r in engine.scheduler.waiting] == ["b"]


def test_engine_core_step_returns_outputs_and_statistics() -> None:
    engine = _engine(FakeRunner(itertools.count(10)))
    engine.handle(_add("a", 5, max_new_tokens=2))

    first, second = engine.step(), engine.step()

    (first_output,) = first.outputs
    assert first_output.queue_s is not None and first_output.queue_s >= 0
    assert msgspec.structs.replace(first_output, queue_s=None) == RequestOutput(
        "a", [10], [LOGPROB]
    )
    assert second.outputs == [RequestOutput("a", [11], [LOGPROB], FinishReason.LENGTH)]
    stats = first.stats
    assert stats.num_requests == 1
    assert (stats.num_prefill_tokens, stats.num_decode_tokens) == (5, 0)
    assert (stats.num_waiting, stats.num_running) == (0, 1)
    assert (stats.num_free_blocks, stats.num_blocks) == (6, 8)
    assert stats.duration_s >= 0
    stats = second.stats
    assert stats.step_index == first.stats.step_index + 1
    assert (stats.num_prefill_tokens, stats.num_decode_tokens) == (0, 1)
    assert (stats.num_running, stats.num_free_blocks) == (0, 8)
    assert not engine.scheduler.has_work


def test_engine_core_counts_prefill_and_decode_tokens_of_a_mixed_step() -> None:
    engine = _engine(FakeRunner())
    engine.handle(_add("a", 5, max_new_tokens=5))
    engine.step()
    engine.handle(_add("b", 7))

    stats = engine.step().stats

    assert (stats.num_requests, stats.num_prefill_tokens, stats.num_decode_tokens) == (2, 7, 1)


def test_engine_core_counts_a_one_token_prompt_chunk_as_prefill() -> None:
    engine = _engine(FakeRunner(), make_scheduler(num_blocks=8, max_step_tokens=8))
    engine.handle(_add("a", 9))
    engine.step()  # prompt tokens 0..7

    stats = engine.step().stats  # prompt token 8, which samples

    assert (stats.num_prefill_tokens, stats.num_decode_tokens) == (1, 0)


def test_engine_core_reports_preemptions_as_a_running_total() -> None:
    engine = _engine(FakeRunner(), make_scheduler(num_blocks=4, block_size=4))
    engine.handle(_add("a", 6, max_new_tokens=8))
    engine.handle(_add("b", 6, max_new_tokens=8))

    totals = [engine.step().stats.num_preemptions for _ in range(5)]

    assert totals == [0, 0, 0, 1, 1]  # step 4: a needs a third block, b makes room


def test_engine_core_reports_prefix_cache_totals() -> None:
    scheduler = make_scheduler(num_blocks=8, block_size=4, prefix_caching=True)
    engine = _engine(FakeRunner(), scheduler)
    engine.handle(_add("a", 9, max_new_tokens=1))
    first = engine.step().stats
    engine.handle(_add("b", 9, max_new_tokens=1))

    second = engine.step().stats

    assert (first.prefix_cache_queried_tokens, first.prefix_cache_hit_tokens) == (9, 0)
    assert (second.prefix_cache_queried_tokens, second.prefix_cache_hit_tokens) == (18, 8)
    assert second.num_prefill_tokens == 1  # only the uncached prompt token was computed


class PoisonedRunner(FakeRunner):
    """Raises whenever a given request is in the plan."""

    def __init__(self, poisoned: str) -> None:
        super().__init__(itertools.count(10))
        self.poisoned = poisoned

    def execute(
        self, plan: StepPlan, token_masks: Future[TokenMasks] | None = None
    ) -> RunnerOutput:
        if any(r.request_id == self.poisoned for r in plan.requests):
            raise RuntimeError("device fell over")
        return super().execute(plan, token_masks)


def test_engine_core_failing_request_ends_alone_and_engine_carries_on() -> None:
    engine = _engine(PoisonedRunner("b"), make_scheduler(num_blocks=8, max_step_tokens=16))
    for request_id in "abc":
        engine.handle(_add(request_id, 4, max_new_tokens=2))

    step = engine.step()

    assert [(o.request_id, o.token_ids, o.error) for o in step.outputs] == [
        ("b", [], "RuntimeError: device fell over"),
        ("a", [10], None),
        ("c", [11], None),
    ]
    assert engine.scheduler.schedule().finished_request_ids == ("b",)
    last = engine.step().outputs
    assert [(o.request_id, o.finish_reason) for o in last] == [
        ("a", FinishReason.LENGTH),
        ("c", FinishReason.LENGTH),
    ]
    assert engine.scheduler.kv_cache.num_free_blocks == 8


def test_engine_core_transient_step_failure_loses_no_request() -> None:
    engine = _engine(FlakyRunner(failing_calls={0}), make_scheduler(num_blocks=8))
    engine.handle(_add("a", 4, max_new_tokens=1))
    engine.handle(_add("b", 4, max_new_tokens=1))

    step = engine.step()  # fails as a whole, then each request runs alone

    assert [(o.request_id, o.error) for o in step.outputs] == [("a", None), ("b", None)]
    assert all(o.finish_reason is FinishReason.LENGTH for o in step.outputs)
