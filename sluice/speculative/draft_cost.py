"""When drafting from a model pays. Unlike an n-gram lookup, each draft costs a pass of the
draft model, so a request should draft only as many tokens as raise its expected tokens per
unit of time: with a chance `a` that a draft is kept (given the drafts before it were) and
each draft pass taking `c` of the target's step, k drafts yield 1 + a + ... + a^k tokens in
1 + k*c steps' time. Where a <= c not even one draft pays."""

from dataclasses import dataclass


@dataclass(slots=True)
class DraftCost:
    """The time of one draft-model pass relative to the target's step: a moving average over
    the steps that drafted, measured by the runner and read by the scheduler."""

    smoothing: float = 0.2
    ratio: float = 0.0
    """0 until the first drafting step is measured: drafting is tried before it is judged."""

    def observe(self, pass_s: float, step_s: float) -> None:
        """One step's mean draft pass time and the target step's time (both in seconds)."""
        if step_s <= 0.0:
            return
        observed = pass_s / step_s
        self.ratio = (
            observed if self.ratio == 0.0 else self.ratio + self.smoothing * (observed - self.ratio)
        )


def best_num_drafts(acceptance: float, cost_per_draft: float, most: int) -> int:
    """The draft count k <= `most` that maximises expected tokens per unit of time,
    (1 + a + ... + a^k) / (1 + k * cost_per_draft); 0 when no draft pays."""
    best, best_gain = 0, 1.0
    expected, kept = 1.0, 1.0
    for count in range(1, most + 1):
        kept *= acceptance
        expected += kept
        gain = expected / (1.0 + count * cost_per_draft)
        if gain > best_gain:
            best, best_gain = count, gain
    return best
