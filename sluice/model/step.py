"""The runner's contract: what the scheduler asks of one step, and what comes back.

A *step* is one forward pass over a flat batch. Each scheduled request brings the tokens it
computes this step (a whole prompt, a prompt chunk, or the one token sampled last step) and its
block table. Only requests whose computed tokens reach their last known token sample."""

from dataclasses import dataclass

from sluice.sampling_params import SamplingParams

RequestId = str
DRAFT_PLACEHOLDER = -1
"""Stands for a draft token that the runner's draft model chooses during the step: with
`--speculator-model-id` the scheduler knows how many drafts a request verifies, not which."""


@dataclass(frozen=True, slots=True)
class ScheduledRequest:
    request_id: RequestId
    token_ids: tuple[int, ...]
    """Tokens whose K/V this step computes, starting at position `num_computed_tokens`."""
    num_computed_tokens: int
    num_prompt_tokens: int
    """Positions below this are prompt; at or above it, generated tokens (recomputed or new)."""
    block_ids: tuple[int, ...]
    """The request's whole block table; covers every position up to the end of this step."""
    sampling: SamplingParams | None
    """Set when this step ends at the request's last known token, so it samples the next one."""
    counts_tokens: bool = False
    """The request has a penalty: the runner counts every token of its sequence as the steps
    bring them, so its first step must start at position 0 (no skipped prefix)."""
    wants_prompt_logprobs: bool = False
    """The runner computes logits at this step's prompt positions and hands the prompt's
    logprobs over with the first sampled token. Cleared once that token exists."""
    num_draft_tokens: int = 0
    """The last this many of `token_ids` are drafts (or DRAFT_PLACEHOLDERs that the draft
    model fills in): the runner verifies them and samples at each of the last
    num_draft_tokens + 1 positions."""
    context_token_ids: tuple[int, ...] = ()
    """With a draft model, when the request drafts: its tokens before `num_computed_tokens`,
    from which the draft model computes what its own cache lacks."""

    @property
    def num_known_tokens(self) -> int:
        """Its tokens that are not drafts."""
        return len(self.token_ids) - self.num_draft_tokens


@dataclass(frozen=True, slots=True)
class StepPlan:
    requests: tuple[ScheduledRequest, ...]
    finished_request_ids: tuple[RequestId, ...] = ()
    """Requests gone since the last step; the runner drops their per-request state."""

    @property
    def num_tokens(self) -> int:
        return sum(len(request.token_ids) for request in self.requests)

    @property
    def num_prompt_tokens(self) -> int:
        """Tokens of this step that sit at prompt positions (the prefill part of the step)."""
        return sum(
            max(0, min(len(r.token_ids), r.num_prompt_tokens - r.num_computed_tokens))
            for r in self.requests
        )


@dataclass(frozen=True, slots=True)
class SampledToken:
    request_id: RequestId
    token_id: int
    logprob: float
    top_token_ids: tuple[int, ...] = ()
    """The most likely tokens at this position, best first, when `top_n_tokens` asked."""
    top_logprobs: tuple[float, ...] = ()
    prompt_logprobs: tuple[float, ...] = ()
    """On the first token of a request that wants them: the logprob of each prompt token after
    the first (NaN where unknown)."""
    accepted_token_ids: tuple[int, ...] = ()
    """Drafts the target model kept, which come before `token_id`."""
    accepted_logprobs: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class RunnerOutput:
    sampled: tuple[SampledToken, ...]
    """One entry per request that sampled, in plan order."""
