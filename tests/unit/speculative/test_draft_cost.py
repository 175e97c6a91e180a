"""How many drafts from a draft model pay, given how often drafts are kept and what each
costs; and the cost's moving average."""

import pytest

from sluice.speculative.draft_cost import (
    DraftCost,
    best_num_drafts,
    catch_up_pays,
    drafting_speedup,
)


def test_no_draft_pays_when_a_draft_costs_more_than_its_chance_of_being_kept() -> None:
    assert best_num_drafts(acceptance=0.4, cost_per_draft=0.5, most=4) == 0


def test_cheap_drafts_that_are_usually_kept_are_drafted_up_to_the_limit() -> None:
    assert best_num_drafts(acceptance=0.9, cost_per_draft=0.1, most=4) == 4


def test_a_gain_within_the_margin_of_error_is_not_worth_drafting() -> None:
    # One draft kept with chance 0.65 at 0.6 a pass: 1.65 tokens in 1.6 steps' time, 3%.
    assert best_num_drafts(acceptance=0.65, cost_per_draft=0.6, most=4) == 0
    assert best_num_drafts(acceptance=0.8, cost_per_draft=0.6, most=4) == 1  # 12.5%


def test_costly_drafts_are_drafted_fewer() -> None:
    # 1 draft: 1.7 tokens in 1.5 steps' time; 2 drafts: 2.19 in 2.0; one is best.
    assert best_num_drafts(acceptance=0.7, cost_per_draft=0.5, most=4) == 1


def test_free_drafts_are_drafted_up_to_the_limit_once_a_few_are_kept() -> None:
    assert best_num_drafts(acceptance=0.2, cost_per_draft=0.0, most=3) == 3


def test_the_speedup_counts_expected_tokens_per_unit_of_time() -> None:
    # Two drafts kept with chance 0.5 each: 1 + 0.5 + 0.25 tokens in 1 + 2 * 0.25 steps.
    assert drafting_speedup(acceptance=0.5, cost_per_draft=0.25, num_drafts=2) == 1.75 / 1.5
    assert drafting_speedup(acceptance=0.9, cost_per_draft=0.0, num_drafts=0) == 1.0


def test_a_catch_up_pays_when_the_steps_it_delays_are_fewer_than_drafting_saves() -> None:
    # A 2x speedup saves 50 of 100 tokens' steps; 100 tokens at 0.1 step delay 2 requests
    # 20 steps in all, 5 requests 50, 6 requests 60.
    assert catch_up_pays(100, 100, speedup=2.0, num_waiting=2, per_token=0.1)
    assert catch_up_pays(100, 100, speedup=2.0, num_waiting=5, per_token=0.1)
    assert not catch_up_pays(100, 100, speedup=2.0, num_waiting=6, per_token=0.1)
    assert not catch_up_pays(1, 100, speedup=1.0, num_waiting=1, per_token=0.0)


def test_each_cost_is_its_first_measurement_then_a_moving_average() -> None:
    cost = DraftCost(smoothing=0.5)
    assert (cost.per_pass, cost.per_catch_up_token) == (0.0, 0.0)

    cost.observe(0.04, pass_s=0.02)
    assert (cost.per_pass, cost.per_catch_up_token) == (pytest.approx(0.5), 0.0)
    cost.observe(0.04, pass_s=0.01, catch_up_token_s=0.002)
    assert cost.per_pass == pytest.approx(0.375)
    assert cost.per_catch_up_token == pytest.approx(0.05)
    cost.observe(0.0, pass_s=0.01)  # no step time: nothing to learn
    assert cost.per_pass == pytest.approx(0.375)
