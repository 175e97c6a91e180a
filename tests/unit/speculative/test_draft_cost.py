"""How many drafts from a draft model pay, given how often drafts are kept and what each
costs; and the cost's moving average."""

import pytest

from sluice.speculative.draft_cost import DraftCost, best_num_drafts


def test_no_draft_pays_when_a_draft_costs_more_than_its_chance_of_being_kept() -> None:
    assert best_num_drafts(acceptance=0.4, cost_per_draft=0.5, most=4) == 0


def test_cheap_drafts_that_are_usually_kept_are_drafted_up_to_the_limit() -> None:
    assert best_num_drafts(acceptance=0.9, cost_per_draft=0.1, most=4) == 4


def test_costly_drafts_are_drafted_fewer() -> None:
    # 1 draft: 1.7 tokens in 1.5 steps' time; 2 drafts: 2.19 in 2.0; one is best.
    assert best_num_drafts(acceptance=0.7, cost_per_draft=0.5, most=4) == 1


def test_free_drafts_pay_whenever_some_are_kept() -> None:
    assert best_num_drafts(acceptance=0.1, cost_per_draft=0.0, most=3) == 3


def test_the_cost_is_the_first_measurement_then_a_moving_average() -> None:
    cost = DraftCost(smoothing=0.5)
    assert cost.ratio == 0.0

    cost.observe(pass_s=0.02, step_s=0.04)
    assert cost.ratio == pytest.approx(0.5)
    cost.observe(pass_s=0.01, step_s=0.04)
    assert cost.ratio == pytest.approx(0.375)
    cost.observe(pass_s=0.01, step_s=0.0)  # no step time: nothing to learn
    assert cost.ratio == pytest.approx(0.375)
