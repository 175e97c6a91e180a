"""Acceptance tracking: drafting stays on while drafts are kept, pauses after sustained low
acceptance (not before enough evidence, not for one bad step), probes again after a pause that
doubles with each failed probe, and forgets past failures once drafting pays again."""

import pytest

from sluice.speculative.adaptive import AcceptanceTracker, DraftPolicy

POLICY = DraftPolicy(
    num_speculative_tokens=4, min_acceptance=0.3, min_drafted=16, pause_steps=8, max_pause_steps=32
)


def _steps(tracker: AcceptanceTracker, accepted: int, count: int, request_id: str = "a") -> None:
    """`count` steps in which the request drafts what it is told and keeps `accepted`."""
    for _ in range(count):
        drafted = tracker.num_drafts(request_id)
        tracker.observe(request_id, drafted, min(accepted, drafted))


def _fail_until_paused(tracker: AcceptanceTracker, request_id: str = "a") -> int:
    """Steps whose drafts all fail until the request pauses; returns how many it took."""
    steps = 0
    while tracker.num_drafts(request_id) > 0:
        tracker.observe(request_id, tracker.num_drafts(request_id), 0)
        steps += 1
    return steps


def _pause_length(tracker: AcceptanceTracker, request_id: str = "a") -> int:
    """Steps until the paused request drafts again."""
    steps = 0
    while tracker.num_drafts(request_id) == 0:
        tracker.observe(request_id, 0, 0)
        steps += 1
    return steps


def test_adaptive_keeps_drafting_with_high_acceptance() -> None:
    tracker = AcceptanceTracker(POLICY)
    assert tracker.num_drafts("a") == 4
    _steps(tracker, accepted=4, count=200)
    assert tracker.num_drafts("a") == 4
    _steps(tracker, accepted=2, count=200)  # a rate of 0.5 still pays
    assert tracker.num_drafts("a") == 4


def test_adaptive_pauses_after_sustained_low_acceptance_but_not_before_min_drafted() -> None:
    tracker = AcceptanceTracker(POLICY)
    _steps(tracker, accepted=0, count=3)  # 12 drafts judged: not enough evidence yet
    assert tracker.num_drafts("a") == 4
    _steps(tracker, accepted=0, count=1)
    assert tracker.num_drafts("a") == 0
    assert tracker.num_drafts("b") == 4  # other requests are unaffected


def test_adaptive_one_bad_step_after_good_ones_does_not_pause() -> None:
    tracker = AcceptanceTracker(POLICY)
    _steps(tracker, accepted=4, count=20)
    _steps(tracker, accepted=0, count=1)
    assert tracker.num_drafts("a") == 4
    assert 1 < _fail_until_paused(tracker) < 10  # but a run of them does


def test_adaptive_steps_without_drafts_change_nothing() -> None:
    tracker = AcceptanceTracker(POLICY)
    for _ in range(100):  # e.g. no n-gram matched
        tracker.observe("a", 0, 0)
    assert tracker.num_drafts("a") == 4
    _steps(tracker, accepted=0, count=4)
    assert tracker.num_drafts("a") == 0


def test_adaptive_pause_doubles_with_each_failed_probe_up_to_the_cap() -> None:
    tracker = AcceptanceTracker(POLICY)
    pauses = []
    for _ in range(5):
        assert _fail_until_paused(tracker) == 4  # each probe judges min_drafted drafts afresh
        pauses.append(_pause_length(tracker))
    assert pauses == [8, 16, 32, 32, 32]


def test_adaptive_successful_probe_resumes_drafting_and_resets_the_pause() -> None:
    tracker = AcceptanceTracker(POLICY)
    _fail_until_paused(tracker)
    assert _pause_length(tracker) == 8
    _fail_until_paused(tracker)
    assert _pause_length(tracker) == 16
    _steps(tracker, accepted=3, count=50)  # the text turned repetitive: drafting pays
    assert tracker.num_drafts("a") == 4
    _fail_until_paused(tracker)
    assert _pause_length(tracker) == 8


def test_adaptive_drop_forgets_the_request() -> None:
    tracker = AcceptanceTracker(POLICY)
    _steps(tracker, accepted=0, count=4)
    assert tracker.num_drafts("a") == 0
    tracker.drop(["a", "never-seen"])
    assert tracker.num_drafts("a") == 4


def test_adaptive_policy_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="smoothing"):
        DraftPolicy(num_speculative_tokens=2, smoothing=0.0)
    with pytest.raises(ValueError, match="pause_steps"):
        DraftPolicy(num_speculative_tokens=2, pause_steps=64, max_pause_steps=32)
    with pytest.raises(ValueError, match="num_speculative_tokens"):
        DraftPolicy(num_speculative_tokens=-1)


def test_costly_drafts_are_fewer_and_stop_when_even_one_does_not_pay() -> None:
    tracker = AcceptanceTracker(POLICY)
    assert tracker.num_drafts("a", draft_cost=0.5) == 4  # nothing judged yet: try them all
    # Keeps 2 of 4 each step: 2 of 3 judged drafts kept, a kept rate of 2/3.
    for _ in range(10):
        tracker.observe("a", 4, 2, draft_cost=0.5)
    assert tracker.num_drafts("a", draft_cost=0.5) == 1
    assert tracker.num_drafts("a") == 4  # free drafts: as many as allowed

    # At a cost of 0.8 a kept rate near 2/3 does not pay for one draft: the request pauses,
    # though its acceptance (about 0.5) is above min_acceptance.
    tracker.observe("a", 1, 1, draft_cost=0.8)
    assert tracker.num_drafts("a", draft_cost=0.8) == 0


def test_costly_drafts_that_do_not_pay_are_judged_after_fewer_drafts() -> None:
    tracker = AcceptanceTracker(POLICY)
    for accepted in [0, 0, 0, 1] * 2:  # one draft a step, one in four kept
        tracker.observe("free", 1, accepted)
        tracker.observe("costly", 1, accepted, draft_cost=0.6)

    assert POLICY.min_costly_drafted <= 8 < POLICY.min_drafted
    assert tracker.num_drafts("free") == 4  # too few free drafts to judge yet
    assert tracker.num_drafts("costly", draft_cost=0.6) == 0


def test_the_kept_rate_is_known_once_drafts_were_judged_and_outlives_a_pause() -> None:
    tracker = AcceptanceTracker(POLICY)
    assert tracker.kept_rate("a") is None

    tracker.observe("a", 4, 2)  # 2 kept, the third judged and rejected
    assert tracker.kept_rate("a") == pytest.approx(2 / 3)
    tracker.observe("a", 0, 0)  # a step without drafts judges nothing
    assert tracker.kept_rate("a") == pytest.approx(2 / 3)
    while tracker.num_drafts("a", draft_cost=0.9) > 0:  # 2/3 does not repay 0.9 a draft
        tracker.observe("a", 1, 0, draft_cost=0.9)
    while tracker.num_drafts("a", draft_cost=0.9) == 0:
        tracker.observe("a", 0, 0, draft_cost=0.9)
    # The probe: the rate from before the pause stands until new drafts are judged.
    assert tracker.kept_rate("a") == pytest.approx(0.9 * 2 / 3)  # one rejection weighed in
    assert tracker.num_drafts("a", draft_cost=0.9) == 1
    tracker.observe("a", 1, 1, draft_cost=0.9)
    assert tracker.kept_rate("a") == 1.0


def test_costly_drafts_of_a_new_request_are_counted_by_the_recent_kept_rate_of_all() -> None:
    tracker = AcceptanceTracker(POLICY)
    assert tracker.num_drafts("new", draft_cost=0.5) == 4  # nothing judged anywhere yet

    for _ in range(10):
        tracker.observe("earlier", 4, 2, draft_cost=0.5)  # a kept rate of 2/3
    assert tracker.kept_rate("new") is None
    assert tracker.num_drafts("new", draft_cost=0.5) == 1
    assert tracker.num_drafts("new") == 4  # free drafts: as many as allowed
