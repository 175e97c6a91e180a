"""Which draft tokens a decoding request brings to its next step (`--speculate N`), as many as
its acceptance record and the step's size allow: found by n-gram lookup over its own prompt and
output, or, with a draft model (`--speculator-model-id`), left as placeholders that the runner's
draft model fills in during the step.

Only plain requests draft: a grammar, a penalty, a watermark, top tokens or prompt logprobs
make each position's processing depend on the tokens before it, which the one-pass verify of
model/runner.py does not model; those requests decode a token per step as before."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sluice.engine.request import Request, RequestId
from sluice.model.step import DRAFT_PLACEHOLDER
from sluice.speculative.adaptive import AcceptanceTracker, DraftPolicy
from sluice.speculative.draft_cost import (
    DraftCost,
    best_num_drafts,
    catch_up_pays,
    drafting_speedup,
)
from sluice.speculative.ngram import NgramProposer


class DraftModelView(Protocol):
    """What the scheduler reads of the runner's draft model (speculative/draft_model.py)."""

    cost: DraftCost

    def missing_tokens(self, block_ids: Sequence[int], end: int) -> int:
        """How many of a request's first `end` positions the draft's cache lacks."""
        ...


@dataclass(slots=True)
class StepDrafts:
    """The drafts one step may still take, and the shape of the batch that waits for them."""

    drafts_left: int
    num_decoding: int
    pass_share: float
    """How many decoding requests wait for each drafting one's draft passes: a pass delays
    the whole step, and at most one drafting request per draft the step allows shares it."""


class Drafter:
    def __init__(
        self,
        num_speculative_tokens: int,
        max_step_tokens: int,
        *,
        draft_model: DraftModelView | None = None,
    ) -> None:
        self.draft_model = draft_model
        """Set when drafts come from a draft model (`--speculator-model-id`)."""
        self.proposer = None if draft_model is not None else NgramProposer()
        self.tracker = AcceptanceTracker(DraftPolicy(num_speculative_tokens))
        self.max_step_tokens = max_step_tokens
        """Drafts only while a step's decodes and drafts stay within this many tokens: while
        a step's time hardly grows with its tokens (reading the weights dominates), a draft
        is nearly free; once compute dominates, every rejected draft costs as much as a
        token, and a full batch gains nothing from drafts."""

    @property
    def from_model(self) -> bool:
        """Drafts come from the runner's draft model, which needs a drafting request's
        earlier tokens (ScheduledRequest.context_token_ids)."""
        return self.draft_model is not None

    def plan_step(self, num_decoding: int, num_requests: int) -> StepDrafts:
        """The drafts a step may take beside `num_decoding` decodes, with `num_requests`
        running or waiting in all: those still prefilling or waiting decode soon, and once
        they do the step has no room for drafts, so a draft model would catch up in vain."""
        budget = max(0, self.max_step_tokens - max(num_decoding, num_requests))
        num_drafting = max(1, min(num_decoding, budget))
        return StepDrafts(budget, num_decoding, num_decoding / num_drafting)

    def drafts_for(self, request: Request, step: StepDrafts, most: int) -> tuple[int, ...]:
        """Drafts for a request about to decode in `step`, at most `most` of them and never
        past its last allowed token; taken from the step's drafts left."""
        if not _may_draft(request):
            return ()
        remaining = request.sampling.max_new_tokens - len(request.output_token_ids) - 1
        limit = min(
            self.tracker.num_drafts(request.request_id, self._cost_per_draft(request)),
            remaining,
            most,
            step.drafts_left,
        )
        if limit > 0:  # weighing the step's costs reads the draft's cache: only when it may draft
            limit = min(limit, self._affordable(request, step, remaining))
        if limit <= 0:
            return ()
        step.drafts_left -= limit
        if self.proposer is None:
            return (DRAFT_PLACEHOLDER,) * limit
        return self.proposer.propose(
            request.request_id, request.prompt_token_ids, request.output_token_ids, limit
        )

    def observe(self, request: Request, num_drafted: int, num_accepted: int) -> None:
        """Record a decode step of the request, drafted or not (a pause counts steps)."""
        self.tracker.observe(
            request.request_id, num_drafted, num_accepted, self._cost_per_draft(request)
        )

    def _cost_per_draft(self, request: Request) -> float:
        """What a draft costs the request, as far as its draft count may depend on it: the
        measured cost varies with timing, and the draft count decides which random draws a
        sampled request's tokens come from, so only greedy requests (whose output drafts
        never change) weigh it; sampled ones stay reproducible under a seed."""
        if self.draft_model is None or not request.sampling.is_greedy:
            return 0.0
        return self.draft_model.cost.per_pass

    def _affordable(self, request: Request, step: StepDrafts, remaining: int) -> int:
        """The most drafts from the draft model that pay for the whole step: its passes delay
        every decoding request, and a request whose draft cache lags must first catch up.
        Unlimited where costs are not weighed (see _cost_per_draft) or not measured yet, or
        where only the request itself would lose: the tracker judges that, with one draft
        a step at least, and pauses it."""
        most = self.tracker.policy.num_speculative_tokens
        per_pass = self._cost_per_draft(request)
        if self.draft_model is None or per_pass == 0.0:
            return most
        # A request without judged drafts gets the benefit of the doubt: they count as kept.
        kept_rate = self.tracker.kept_rate(request.request_id)
        kept_rate = 1.0 if kept_rate is None else kept_rate
        per_draft = per_pass * step.pass_share
        count = best_num_drafts(kept_rate, per_draft, most)
        if count == 0 and step.pass_share > 1.0:
            return 0
        # A catch-up (after a pause, or before the first draft) needs the drafts to pay: a
        # request paused for drafts that did not pay probes again only if costs fell.
        missing = self.draft_model.missing_tokens(request.block_ids, request.num_computed_tokens)
        if missing > 1:  # more than the last draft, which is never fed back
            speedup = drafting_speedup(kept_rate, per_draft, max(count, 1))
            cost = self.draft_model.cost.per_catch_up_token
            if not catch_up_pays(missing, remaining, speedup, step.num_decoding, cost):
                return 0
        return count or most

    def drop(self, request_ids: Iterable[RequestId]) -> None:
        ids = list(request_ids)
        if self.proposer is not None:
            self.proposer.drop(ids)
        self.tracker.drop(ids)


def _may_draft(request: Request) -> bool:
    sampling = request.sampling
    return (
        sampling.grammar is None
        and not sampling.has_penalty
        and sampling.watermark is None
        and sampling.top_n_tokens == 0
        and not request.wants_prompt_logprobs
    )
