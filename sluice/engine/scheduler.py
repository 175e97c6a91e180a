"""Decides which requests run in the next step and how many tokens each computes.

There are no prefill and decode phases: each request's computed tokens catch up with its known
tokens (prompt + output) within a per-step token budget, so a prompt longer than the budget is
prefilled in chunks across steps while running requests keep decoding. While any request
decodes, a step adds only a small chunk of prompt tokens to the decodes, so that running
streams' inter-token latency stays near a decode step's. Running requests go first, oldest
first; waiting requests are admitted in arrival order while budget and KV blocks last.
Blocks are taken a chunk at a time, never for a whole request up front, so a big request at
the head of the queue waits only for its next chunk's blocks; an admitted request starts
after its longest cached prefix, whose tokens cost no budget.
When blocks run out, the most recently admitted request is preempted: its blocks are freed and
it recomputes later. Knows nothing about tensors; talks to the cache only through
KVCacheManager."""

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from sluice.engine.drafts import Drafter
from sluice.engine.kv_cache.manager import KVCacheManager
from sluice.engine.request import Request, RequestId, RequestStatus
from sluice.ipc.messages import FinishReason, RequestOutput
from sluice.model.step import RunnerOutput, SampledToken, ScheduledRequest, StepPlan


@dataclass(frozen=True, slots=True)
class SchedulerLimits:
    max_step_tokens: int
    """Tokens computed per step, decodes and prompt chunks together (TGI's
    `--max-batch-prefill-tokens`)."""
    max_prompt_tokens_while_decoding: int
    """Prompt tokens a step computes beside running decodes: a step's time grows with its
    tokens, and every decoding stream waits for the whole step."""


@dataclass(slots=True)
class _StepDraft:
    """The requests chosen so far for the next step, in batch order, and the budget left."""

    budget: int
    num_new: dict[RequestId, int] = field(default_factory=dict)

    def add(self, request: Request, count: int) -> None:
        self.num_new[request.request_id] = count
        self.budget -= count


class Scheduler:
    def __init__(
        self, limits: SchedulerLimits, kv_cache: KVCacheManager, drafter: Drafter | None = None
    ) -> None:
        self.limits = limits
        self.kv_cache = kv_cache
        self.drafter = drafter
        """Set with `--speculate`: decoding requests bring draft tokens to verify."""
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self._requests: dict[RequestId, Request] = {}
        self._finished_ids: list[RequestId] = []
        self.num_preemptions = 0

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add_request(self, request: Request) -> None:
        self._requests[request.request_id] = request
        self.waiting.append(request)

    def abort(self, request_ids: Iterable[RequestId]) -> None:
        """Forget these requests and free their blocks; unknown ids are already gone."""
        for request_id in request_ids:
            request = self._requests.get(request_id)
            if request is not None:
                self._finish(request, reason=None)

    def schedule(self) -> StepPlan:
        draft = _StepDraft(budget=self._step_budget())
        preemptions_before = self.num_preemptions
        self._schedule_running(draft)
        if self.num_preemptions == preemptions_before:  # no admissions while memory is short
            self._schedule_waiting(draft)
        plan = StepPlan(
            requests=tuple(
                self._describe(self._requests[request_id], count)
                for request_id, count in draft.num_new.items()
            ),
            finished_request_ids=tuple(self._finished_ids),
        )
        self._finished_ids.clear()
        return plan

    def update(self, plan: StepPlan, output: RunnerOutput) -> list[RequestOutput]:
        """Apply a step's results: advance computed tokens (past the accepted drafts only: the
        slots of rejected ones are written over later), append samples, finish requests."""
        for scheduled in plan.requests:
            request = self._requests.get(scheduled.request_id)
            if request is not None:
                request.num_computed_tokens += len(scheduled.token_ids) - scheduled.num_draft_tokens
        outputs: list[RequestOutput] = []
        for sampled in output.sampled:
            request = self._requests.get(sampled.request_id)
            if request is None:  # aborted while the step ran
                continue
            request.num_computed_tokens += len(sampled.accepted_token_ids)
            if self.drafter is not None and request.output_token_ids:  # a decode step
                drafted = len(request.draft_token_ids)
                self.drafter.observe(request, drafted, len(sampled.accepted_token_ids))
            request.draft_token_ids = ()
            self.kv_cache.cache_blocks(request)
            outputs.append(self._append(request, sampled))
        for scheduled in plan.requests:  # requests mid-prompt: no sample
            request = self._requests.get(scheduled.request_id)
            if request is not None and scheduled.sampling is None:
                self.kv_cache.cache_blocks(request)
        return outputs

    def fail(self, request_id: RequestId, message: str) -> RequestOutput:
        """End a request that could not run, with an error."""
        request = self._requests.get(request_id)
        if request is not None:
            self._finish(request, reason=None)
        return RequestOutput(request_id, [], [], error=message)

    def _step_budget(self) -> int:
        num_decoding = sum(1 for r in self.running if r.num_uncomputed_tokens == 1)
        if num_decoding == 0:
            return self.limits.max_step_tokens
        return min(
            self.limits.max_step_tokens,
            num_decoding + self.limits.max_prompt_tokens_while_decoding,
        )

    def _schedule_running(self, draft: _StepDraft) -> None:
        drafter, step_drafts = self.drafter, None
        if drafter is not None:
            num_decoding = sum(1 for r in self.running if r.num_uncomputed_tokens == 1)
            num_requests = len(self.running) + len(self.waiting)
            step_drafts = drafter.plan_step(num_decoding, num_requests)
        index = 0
        while index < len(self.running) and draft.budget > 0:
            request = self.running[index]
            count = min(request.num_uncomputed_tokens, draft.budget)
            drafts: tuple[int, ...] = ()
            if (
                drafter is not None
                and step_drafts is not None
                and request.num_uncomputed_tokens == 1
            ):
                drafts = drafter.drafts_for(request, step_drafts, draft.budget - 1)
            if not self._make_room(request, count + len(drafts)):
                continue  # the request itself was preempted; the list shrank
            request.draft_token_ids = drafts
            draft.add(request, count + len(drafts))
            index += 1

    def _schedule_waiting(self, draft: _StepDraft) -> None:
        while self.waiting and draft.budget > 0:
            request = self.waiting[0]
            prefix = self.kv_cache.match_prefix(request)
            count = min(request.num_tokens - prefix.num_tokens, draft.budget)
            if not self.kv_cache.allocate_slots(request, count, prefix):
                return
            self.waiting.popleft()
            request.status = RequestStatus.RUNNING
            if request.first_scheduled_time is None:
                request.first_scheduled_time = time.monotonic()
            self.running.append(request)
            draft.add(request, count)

    def _make_room(self, request: Request, count: int) -> bool:
        """Allocate slots for `request`, preempting the youngest requests (not yet chosen for
        this step: running requests are chosen oldest first) while blocks lack. False when
        `request` itself had to be preempted."""
        while not self.kv_cache.allocate_slots(request, count):
            victim = self.running.pop()
            self._preempt(victim)
            if victim is request:
                return False
        return True

    def _preempt(self, request: Request) -> None:
        self.kv_cache.free(request)
        request.num_computed_tokens = 0
        request.draft_token_ids = ()
        request.status = RequestStatus.WAITING
        request.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(request)

    def _append(self, request: Request, sampled: SampledToken) -> RequestOutput:
        """Append the step's tokens (accepted drafts, then the sampled one) until one ends the
        request; tokens after that are dropped, as TGI drops them."""
        tokens = (*sampled.accepted_token_ids, sampled.token_id)
        logprobs = (*sampled.accepted_logprobs, sampled.logprob)
        reason = None
        for count, token_id in enumerate(tokens, start=1):
            request.output_token_ids.append(token_id)
            reason = request.check_finished()
            if reason is not None:
                tokens, logprobs = tokens[:count], logprobs[:count]
                self._finish(request, reason)
                break
        return _request_output(request, sampled, list(tokens), list(logprobs), reason)

    def _finish(self, request: Request, reason: FinishReason | None) -> None:
        request.status = RequestStatus.FINISHED
        request.finish_reason = reason
        self.kv_cache.free(request)
        if request in self.running:
            self.running.remove(request)
        else:
            self.waiting.remove(request)
        del self._requests[request.request_id]
        self._finished_ids.append(request.request_id)
        if self.drafter is not None:
            self.drafter.drop([request.request_id])

    def _describe(self, request: Request, count: int) -> ScheduledRequest:
        start = request.num_computed_tokens
        drafts = request.draft_token_ids
        known = count - len(drafts)
        samples = start + known == request.num_tokens
        with_context = bool(drafts) and self.drafter is not None and self.drafter.from_model
        return ScheduledRequest(
            request_id=request.request_id,
            token_ids=request.token_ids_from(start, known) + drafts,
            num_computed_tokens=start,
            num_prompt_tokens=len(request.prompt_token_ids),
            block_ids=tuple(request.block_ids),
            sampling=request.sampling if samples else None,
            counts_tokens=request.sampling.has_penalty,
            wants_prompt_logprobs=request.wants_prompt_logprobs,
            num_draft_tokens=len(drafts),
            context_token_ids=request.token_ids_from(0, start) if with_context else (),
        )


def _request_output(
    request: Request,
    sampled: SampledToken,
    token_ids: list[int],
    logprobs: list[float],
    reason: FinishReason | None,
) -> RequestOutput:
    queue_s = None
    if len(request.output_token_ids) == 1 and request.first_scheduled_time is not None:
        queue_s = request.first_scheduled_time - request.arrival_time
    if not sampled.top_token_ids and not sampled.prompt_logprobs:
        return RequestOutput(request.request_id, token_ids, logprobs, reason, queue_s=queue_s)
    return RequestOutput(
        request.request_id,
        token_ids,
        logprobs,
        reason,
        top_token_ids=[list(sampled.top_token_ids)],
        top_logprobs=[list(sampled.top_logprobs)],
        prompt_logprobs=list(sampled.prompt_logprobs),
        queue_s=queue_s,
    )
