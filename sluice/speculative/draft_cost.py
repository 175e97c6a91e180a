"""When drafting from a model pays. Unlike an n-gram lookup, each draft costs a pass of the
draft model, so a request should draft only as many tokens as raise its expected tokens per
unit of time: with a chance `a` that a draft is kept (given the drafts before it were) and
each draft pass taking `c` of the target's step, k drafts yield 1 + a + ... + a^k tokens in
1 + k*c steps' time. Where a <= c not even one draft pays.

Before its first draft a request must also *catch up*: the draft model computes the tokens it
has not seen (the prompt, and any output produced while the request did not draft). That is a
one-off cost, paid in one step by every request in it, and repaid only by the steps that
drafting saves the request over its remaining tokens."""

from dataclasses import dataclass

MIN_SPEEDUP = 1.1
"""Drafting must be expected to gain more than this: the measured cost leaves out the target's
extra positions (on a CPU each costs a few percent of a step), and a kept rate estimated from
a few drafts is noisy, so a smaller expected gain is as likely a loss."""


@dataclass(slots=True)
class DraftCost:
    """What the draft model's work costs relative to the target's step: moving averages over
    the steps that drafted, measured by the runner and read by the scheduler. Each is 0 until
    first measured: drafting is tried before it is judged."""

    smoothing: float = 0.2
    per_pass: float = 0.0
    """One draft pass of a token or two per drafting request."""
    per_catch_up_token: float = 0.0
    """One token of a catch-up (a pass over many tokens per request)."""

    def observe(
        self, step_s: float, *, pass_s: float | None = None, catch_up_token_s: float | None = None
    ) -> None:
        """One step's target time, with its mean draft pass time and its catch-up time per
        token where it had them (all in seconds)."""
        if step_s <= 0.0:
            return
        if pass_s is not None:
            self.per_pass = self._averaged(self.per_pass, pass_s / step_s)
        if catch_up_token_s is not None:
            self.per_catch_up_token = self._averaged(
                self.per_catch_up_token, catch_up_token_s / step_s
            )

    def _averaged(self, average: float, observed: float) -> float:
        return observed if average == 0.0 else average + self.smoothing * (observed - average)


def best_num_drafts(acceptance: float, cost_per_draft: float, most: int) -> int:
    """The draft count k <= `most` that maximises expected tokens per unit of time,
    (1 + a + ... + a^k) / (1 + k * cost_per_draft); 0 when none gains more than MIN_SPEEDUP."""
    best, best_speedup = 0, MIN_SPEEDUP
    for count in range(1, most + 1):
        speedup = drafting_speedup(acceptance, cost_per_draft, count)
        if speedup > best_speedup:
            best, best_speedup = count, speedup
    return best


def drafting_speedup(acceptance: float, cost_per_draft: float, num_drafts: int) -> float:
    """Expected tokens per unit of time when drafting `num_drafts` a step, relative to one
    token a step without drafts."""
    expected, kept = 1.0, 1.0
    for _ in range(num_drafts):
        kept *= acceptance
        expected += kept
    return expected / (1.0 + num_drafts * cost_per_draft)


def catch_up_pays(
    num_missing: int, num_remaining: int, speedup: float, num_waiting: int, per_token: float
) -> bool:
    """Whether catching the draft up on `num_missing` tokens, which delays each of the
    `num_waiting` requests of the step by `num_missing * per_token` steps, is repaid by the
    steps that a `speedup` saves the request over its `num_remaining` tokens."""
    if speedup <= 1.0:
        return False
    steps_saved = num_remaining * (1.0 - 1.0 / speedup)
    return num_waiting * num_missing * per_token <= steps_saved
