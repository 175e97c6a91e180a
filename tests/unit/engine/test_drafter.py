"""What a draft model's drafts may cost: the Drafter weighs its measured pass and catch-up
costs against what drafting saves, for greedy requests only (a sampled request's draft count
must not depend on timing, or its seeded draws would change)."""

from sluice.engine.drafts import Drafter
from sluice.engine.request import Request
from sluice.sampling_params import SamplingParams
from sluice.speculative.draft_cost import DraftCost
from tests.unit.engine.draft_model_view import StubDraftModel

PROMPT = [5, 6, 7, 8] * 4


def _decoding(request_id: str, max_new_tokens: int = 50, *, do_sample: bool = False) -> Request:
    request = Request(
        request_id, list(PROMPT), SamplingParams(max_new_tokens=max_new_tokens, do_sample=do_sample)
    )
    request.output_token_ids.append(5)
    request.num_computed_tokens = len(PROMPT)
    return request


def _keeps_two_of_three(drafter: Drafter, request: Request) -> None:
    for _ in range(10):
        drafter.observe(request, num_drafted=3, num_accepted=2)


def test_a_costly_draft_model_drafts_less_for_greedy_requests_only() -> None:
    drafter = Drafter(3, max_step_tokens=64, draft_model=StubDraftModel(DraftCost(per_pass=0.5)))
    greedy, sampled = _decoding("g"), _decoding("s", do_sample=True)
    for request in (greedy, sampled):
        assert len(drafter.drafts_for(request, drafter.plan_step(1, 1), most=8)) == 3
        _keeps_two_of_three(drafter, request)

    assert len(drafter.drafts_for(greedy, drafter.plan_step(1, 1), most=8)) == 1
    assert len(drafter.drafts_for(sampled, drafter.plan_step(1, 1), most=8)) == 3


def test_a_draft_pass_that_delays_a_big_batch_for_one_drafting_request_does_not_pay() -> None:
    drafter = Drafter(3, max_step_tokens=16, draft_model=StubDraftModel(DraftCost(per_pass=0.3)))
    request = _decoding("a")
    _keeps_two_of_three(drafter, request)
    assert len(drafter.drafts_for(request, drafter.plan_step(1, 1), most=8)) == 2

    # 14 decodes leave room for two drafts: at most two of the 14 share each pass.
    step = drafter.plan_step(14, 14)
    assert step.drafts_left == 2
    assert drafter.drafts_for(request, step, most=8) == ()
    assert drafter.drafts_for(_decoding("new"), step, most=8) == ()  # even if all are kept
    # With 4 decodes each can draft: a pass delays no more requests than it serves.
    assert len(drafter.drafts_for(request, drafter.plan_step(4, 4), most=8)) == 2


def test_a_long_catch_up_is_made_only_where_enough_tokens_remain_to_repay_it() -> None:
    cost = DraftCost(per_pass=0.2, per_catch_up_token=0.02)
    draft_model = StubDraftModel(cost, num_missing=400)
    drafter = Drafter(4, max_step_tokens=16, draft_model=draft_model)

    # New requests count on every draft being kept: 4 drafts a step, a 2.8x speedup, which
    # saves 0.64 steps a token. The 400 tokens cost 8 steps: 1,000 tokens left repay them,
    # 9 do not.
    assert len(drafter.drafts_for(_decoding("long", 1000), drafter.plan_step(1, 1), most=8)) == 4
    assert drafter.drafts_for(_decoding("short", 11), drafter.plan_step(1, 1), most=8) == ()
    # A catch-up delays every decoding request: with four it costs 32 steps' worth.
    assert len(drafter.drafts_for(_decoding("long", 1000), drafter.plan_step(4, 4), most=8)) == 4
    assert len(drafter.drafts_for(_decoding("medium", 30), drafter.plan_step(1, 1), most=8)) == 4
    assert drafter.drafts_for(_decoding("medium", 30), drafter.plan_step(4, 4), most=8) == ()
    # Without a catch-up the short request drafts.
    draft_model.num_missing = 0
    assert len(drafter.drafts_for(_decoding("short", 11), drafter.plan_step(1, 1), most=8)) == 4


def test_costs_not_measured_yet_do_not_stop_drafting() -> None:
    drafter = Drafter(3, max_step_tokens=16, draft_model=StubDraftModel(num_missing=500))
    request = _decoding("a", max_new_tokens=5)

    assert len(drafter.drafts_for(request, drafter.plan_step(10, 10), most=8)) == 3


def test_a_request_whose_drafts_do_not_pay_pauses_then_probes_only_without_a_catch_up() -> None:
    draft_model = StubDraftModel(DraftCost(per_pass=0.9, per_catch_up_token=0.01))
    drafter = Drafter(3, max_step_tokens=16, draft_model=draft_model)
    request = _decoding("a", max_new_tokens=1000)
    _keeps_two_of_three(drafter, request)  # a kept rate of 2/3 does not repay a 0.9 pass

    assert drafter.drafts_for(request, drafter.plan_step(1, 1), most=8) == ()
    for _ in range(drafter.tracker.policy.pause_steps):
        drafter.observe(request, num_drafted=0, num_accepted=0)
    # The probe drafts one: enough to judge, and its earlier rate says more would not pay.
    assert len(drafter.drafts_for(request, drafter.plan_step(1, 1), most=8)) == 1
    # Had the draft to catch up on the pause first, that rate says it would not be repaid.
    draft_model.num_missing = 32
    assert drafter.drafts_for(request, drafter.plan_step(1, 1), most=8) == ()
