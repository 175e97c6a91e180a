"""Which draft tokens a decoding request brings to its next step (`--speculate N`), as many as
its acceptance record and the step's size allow: found by n-gram lookup over its own prompt and
output, or, with a draft model (`--speculator-model-id`), left as placeholders that the runner's
draft model fills in during the step.

Only plain requests draft: a grammar, a penalty, a watermark, top tokens or prompt logprobs
make each position's processing depend on the tokens before it, which the one-pass verify of
model/runner.py does not model; those requests decode a token per step as before."""

from collections.abc import Iterable

from sluice.engine.request import Request, RequestId
from sluice.model.step import DRAFT_PLACEHOLDER
from sluice.speculative.adaptive import AcceptanceTracker, DraftPolicy
from sluice.speculative.draft_cost import DraftCost
from sluice.speculative.ngram import NgramProposer


class Drafter:
    def __init__(
        self,
        num_speculative_tokens: int,
        max_step_tokens: int,
        *,
        draft_cost: DraftCost | None = None,
    ) -> None:
        self.draft_cost = draft_cost
        """Set when drafts come from a draft model: what each of its passes costs."""
        self.proposer = None if draft_cost is not None else NgramProposer()
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
        return self.proposer is None

    def draft_budget(self, num_decoding: int) -> int:
        """Draft tokens the next step may verify beside `num_decoding` decodes."""
        return max(0, self.max_step_tokens - num_decoding)

    def drafts_for(self, request: Request, budget: int) -> tuple[int, ...]:
        """Drafts for a request about to decode, at most `budget` of them and never past its
        last allowed token."""
        if not _may_draft(request):
            return ()
        remaining = request.sampling.max_new_tokens - len(request.output_token_ids) - 1
        wanted = self.tracker.num_drafts(request.request_id, self._cost_per_draft(request))
        limit = min(wanted, remaining, budget)
        if limit <= 0:
            return ()
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
        if self.draft_cost is None or not request.sampling.is_greedy:
            return 0.0
        return self.draft_cost.ratio

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
