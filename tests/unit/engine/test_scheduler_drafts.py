"""Drafts in the scheduler: a decoding request brings n-gram drafts (or placeholders for a
draft model) to its step, the computed tokens advance past the accepted drafts only, and tokens
after the end of a request are dropped."""

from sluice.engine.drafts import Drafter
from sluice.engine.kv_cache.manager import KVCacheManager
from sluice.engine.request import Request, RequestStatus
from sluice.engine.scheduler import Scheduler, SchedulerLimits
from sluice.ipc.messages import FinishReason
from sluice.model.step import DRAFT_PLACEHOLDER, RunnerOutput, SampledToken
from sluice.sampling_params import SamplingParams
from tests.unit.engine.draft_model_view import StubDraftModel

PATTERN = [5, 6, 7, 8] * 4  # n-gram lookup proposes what followed the last tokens before


def _decoding(
    max_new_tokens: int, *, draft_model: StubDraftModel | None = None
) -> tuple[Scheduler, Request]:
    """A scheduler with drafts (from `draft_model` if given) and one request whose prompt is
    done and first token out."""
    scheduler = Scheduler(
        SchedulerLimits(64, max_prompt_tokens_while_decoding=64),
        KVCacheManager(16, 4, prefix_caching=False),
        Drafter(3, max_step_tokens=64, draft_model=draft_model),
    )
    request = Request("a", list(PATTERN), SamplingParams(max_new_tokens=max_new_tokens))
    scheduler.add_request(request)
    plan = scheduler.schedule()
    scheduler.update(plan, RunnerOutput((SampledToken("a", 5, -0.1),)))
    return scheduler, request


def test_a_decoding_request_brings_drafts_and_keeps_only_the_accepted_ones() -> None:
    scheduler, request = _decoding(max_new_tokens=10)

    plan = scheduler.schedule()

    (scheduled,) = plan.requests
    assert scheduled.num_draft_tokens == 3
    assert scheduled.token_ids == (5, 6, 7, 8)  # the last token, then drafts 6, 7, 8
    assert scheduled.sampling is not None
    # The target keeps drafts 6 and 7, and replaces 8 with 9.
    sampled = SampledToken("a", 9, -0.3, accepted_token_ids=(6, 7), accepted_logprobs=(-0.1, -0.2))
    (output,) = scheduler.update(plan, RunnerOutput((sampled,)))
    assert output.token_ids == [6, 7, 9]
    assert output.logprobs == [-0.1, -0.2, -0.3]
    assert request.output_token_ids == [5, 6, 7, 9]
    # Computed: the prompt, the first token and the two accepted drafts; 9 comes next step.
    assert request.num_computed_tokens == len(PATTERN) + 3
    assert request.num_uncomputed_tokens == 1


def test_drafts_of_a_draft_model_are_placeholders_with_their_slots_allocated() -> None:
    scheduler, request = _decoding(max_new_tokens=10, draft_model=StubDraftModel())

    plan = scheduler.schedule()

    (scheduled,) = plan.requests
    assert scheduled.num_draft_tokens == 3
    assert scheduled.token_ids == (5, *[DRAFT_PLACEHOLDER] * 3)
    assert scheduled.context_token_ids == tuple(PATTERN)  # the draft model catches up from them
    assert len(scheduled.block_ids) * 4 >= len(PATTERN) + 1 + 3  # the drafts' K/V fit too
    # The runner reports the drafts it verified through the accepted ones.
    sampled = SampledToken("a", 9, -0.3, accepted_token_ids=(6,), accepted_logprobs=(-0.1,))
    (output,) = scheduler.update(plan, RunnerOutput((sampled,)))
    assert output.token_ids == [6, 9]
    assert request.num_computed_tokens == len(PATTERN) + 2


def test_tokens_past_the_end_of_a_request_are_dropped() -> None:
    scheduler, request = _decoding(max_new_tokens=3)

    plan = scheduler.schedule()
    (scheduled,) = plan.requests
    assert scheduled.num_draft_tokens == 1  # only one more token may follow the draft
    sampled = SampledToken("a", 7, -0.2, accepted_token_ids=(6,), accepted_logprobs=(-0.1,))
    (output,) = scheduler.update(plan, RunnerOutput((sampled,)))

    assert output.token_ids == [6, 7]
    assert output.finish_reason is FinishReason.LENGTH
    assert request.status is RequestStatus.FINISHED
    assert request.output_token_ids == [5, 6, 7]


def test_a_step_drafts_only_while_it_stays_small() -> None:
    scheduler = Scheduler(
        SchedulerLimits(128, max_prompt_tokens_while_decoding=64),
        KVCacheManager(64, 4, prefix_caching=False),
        Drafter(3, max_step_tokens=8),
    )
    requests = [
        Request(f"r{i}", list(PATTERN), SamplingParams(max_new_tokens=20)) for i in range(6)
    ]
    for request in requests:
        scheduler.add_request(request)
    plan = scheduler.schedule()
    tokens = RunnerOutput(tuple(SampledToken(r.request_id, 5, -0.1) for r in requests))
    scheduler.update(plan, tokens)

    plan = scheduler.schedule()

    # Six decodes leave room for two drafts in an 8-token step: the oldest request takes them.
    assert [r.num_draft_tokens for r in plan.requests] == [2, 0, 0, 0, 0, 0]
    assert plan.num_tokens == 8


def test_no_step_drafts_while_waiting_requests_would_leave_no_room_for_drafts() -> None:
    scheduler = Scheduler(
        SchedulerLimits(128, max_prompt_tokens_while_decoding=8),
        KVCacheManager(64, 4, prefix_caching=False),
        Drafter(3, max_step_tokens=8),
    )
    first = Request("first", list(PATTERN), SamplingParams(max_new_tokens=20))
    scheduler.add_request(first)
    scheduler.update(scheduler.schedule(), RunnerOutput((SampledToken("first", 5, -0.1),)))
    for i in range(8):  # eight more arrive: they will decode soon, filling the step
        scheduler.add_request(Request(f"late{i}", list(PATTERN), SamplingParams(max_new_tokens=20)))

    plan = scheduler.schedule()

    assert plan.requests[0].request_id == "first"
    assert all(r.num_draft_tokens == 0 for r in plan.requests)
