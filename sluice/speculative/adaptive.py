"""Decides how many tokens each request drafts next step, from how many of its drafts the
target kept: per-request state that the scheduler updates after every step.

Each draft costs a verify position whether it is kept or not, so a request whose drafts keep
failing slows its batch down. Its *acceptance rate* (accepted / drafted, a moving average in
which every drafted token counts once) decides: below `min_acceptance`, once enough drafts
were judged, the request stops drafting for a pause, then probes again with fresh statistics.
Each failed probe doubles the pause (up to a cap), so a workload that never profits pays
for a few probes only, and text that turns repetitive later is still caught.

Drafts from a draft model cost a pass each as well (draft_cost.py): given that cost, a request
drafts as many tokens as its *kept rate* (the chance that a judged draft is kept, a second
moving average; for a request without judged drafts, the recent kept rate of all) makes
worthwhile, is judged after fewer drafts, and pauses as above when not even one pays."""

from collections.abc import Iterable
from dataclasses import dataclass

from sluice.model.step import RequestId
from sluice.speculative.draft_cost import best_num_drafts


@dataclass(frozen=True, slots=True)
class DraftPolicy:
    num_speculative_tokens: int
    """Most drafts per request and step (`--speculate N`)."""
    min_acceptance: float = 0.3
    """Pause drafting below this acceptance rate. Drafting pays while the rate exceeds the cost
    of one verify position relative to a whole decode step: small on a GPU at small batch
    sizes, larger where compute is the limit."""
    smoothing: float = 0.1
    """Weight of one drafted token in the moving average (about the last 1 / smoothing count)."""
    min_drafted: int = 16
    """Drafts judged since the start or the last probe before the rate may cause a pause."""
    min_costly_drafted: int = 4
    """The same for drafts that cost a pass each (from a draft model): while they do not
    pay, every step that drafts one more loses time."""
    pause_steps: int = 32
    """Decode steps without drafts after the first pause; doubles with each failed probe."""
    max_pause_steps: int = 512

    def __post_init__(self) -> None:
        if self.num_speculative_tokens < 0:
            raise ValueError(
                f"num_speculative_tokens must be >= 0, got {self.num_speculative_tokens}"
            )
        if not 0.0 < self.smoothing <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1], got {self.smoothing}")
        if not 1 <= self.pause_steps <= self.max_pause_steps:
            raise ValueError(
                f"need 1 <= pause_steps <= max_pause_steps, got {self.pause_steps} and "
                f"{self.max_pause_steps}"
            )


@dataclass(slots=True)
class _RequestAcceptance:
    next_pause: int
    """Length of the pause that the next failed judgement starts."""
    rate: float = 0.0
    kept_rate: float | None = None
    """Kept / judged drafts (a draft is judged when every draft before it was kept); None
    until a draft is judged. A pause keeps it, as the guess until a probe's are judged."""
    num_drafted: int = 0
    """Drafts judged since the start or the last probe."""
    paused_steps_left: int = 0


class AcceptanceTracker:
    """Per-request acceptance rates and pauses under one DraftPolicy."""

    def __init__(self, policy: DraftPolicy) -> None:
        self.policy = policy
        self._requests: dict[RequestId, _RequestAcceptance] = {}
        self._recent_kept_rate: float | None = None
        """Over all requests' recent drafts: what a request that has none judged may expect."""

    def num_drafts(self, request_id: RequestId, draft_cost: float = 0.0) -> int:
        """How many tokens to draft for the request this step: 0 while it is paused, at least
        1 otherwise, so that its drafts are judged. `draft_cost`: a draft's time relative to
        a step (0: drafts are free to make, so as many as allowed)."""
        most = self.policy.num_speculative_tokens
        state = self._requests.get(request_id)
        if state is not None and state.paused_steps_left > 0:
            return 0
        expected = self.kept_rate(request_id)
        if expected is None:
            expected = self._recent_kept_rate
        if draft_cost == 0.0 or expected is None:
            return most
        return max(1, best_num_drafts(expected, draft_cost, most))

    def kept_rate(self, request_id: RequestId) -> float | None:
        """The request's kept rate, from before its last pause while a probe's drafts are
        not judged yet; None until it has had a draft judged."""
        state = self._requests.get(request_id)
        return state.kept_rate if state is not None else None

    def observe(
        self, request_id: RequestId, num_drafted: int, num_accepted: int, draft_cost: float = 0.0
    ) -> None:
        """Record one decode step of the request: call it once per step it decoded in, with
        0 drafted when it drafted nothing (paused, or no n-gram matched)."""
        policy = self.policy
        state = self._requests.get(request_id)
        if state is None:
            state = self._requests[request_id] = _RequestAcceptance(policy.pause_steps)
        if state.paused_steps_left > 0:
            state.paused_steps_left -= 1
            if state.paused_steps_left == 0:  # probe: judge the next drafts afresh
                state.num_drafted = 0
            return
        if num_drafted == 0:
            return
        num_judged = num_accepted + (num_accepted < num_drafted)
        kept_rate = num_accepted / num_judged
        recent = self._recent_kept_rate
        self._recent_kept_rate = (
            kept_rate if recent is None else self._averaged(recent, kept_rate, num_judged)
        )
        if state.num_drafted == 0 or state.kept_rate is None:
            state.rate = num_accepted / num_drafted
            state.kept_rate = kept_rate
        else:
            state.rate = self._averaged(state.rate, num_accepted / num_drafted, num_drafted)
            state.kept_rate = self._averaged(state.kept_rate, kept_rate, num_judged)
        state.num_drafted += num_drafted
        min_drafted = policy.min_drafted if draft_cost == 0.0 else policy.min_costly_drafted
        if state.num_drafted < min_drafted:
            return
        pays = state.rate >= policy.min_acceptance and (
            draft_cost == 0.0 or best_num_drafts(state.kept_rate, draft_cost, 1) > 0
        )
        if pays:
            state.next_pause = policy.pause_steps  # drafting pays again: forget past failures
            return
        state.paused_steps_left = state.next_pause
        state.next_pause = min(2 * state.next_pause, policy.max_pause_steps)

    def _averaged(self, average: float, observed: float, count: int) -> float:
        """The moving average after `count` tokens of which `observed` is the fraction."""
        weight = 1.0 - (1.0 - self.policy.smoothing) ** count
        return average + weight * (observed - average)

    def drop(self, request_ids: Iterable[RequestId]) -> None:
        for request_id in request_ids:
            self._requests.pop(request_id, None)
