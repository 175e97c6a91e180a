"""The step budget beside decodes: prompt chunks beside running streams stay small, and a big
prompt at the head of the queue is prefilled in chunks without stalling the streams or
holding back the requests behind it for long."""

from sluice.engine.request import RequestStatus
from sluice.model.step import StepPlan
from tests.unit.engine.scheduler_driver import FakeRunner, make_request, make_scheduler, run_step


def _shape(plan: StepPlan) -> list[tuple[str, int]]:
    return [(r.request_id, len(r.token_ids)) for r in plan.requests]


def test_a_step_beside_decodes_adds_only_a_small_prompt_chunk() -> None:
    scheduler = make_scheduler(
        num_blocks=64, block_size=4, max_step_tokens=32, max_prompt_tokens_while_decoding=5
    )
    runner = FakeRunner()
    scheduler.add_request(make_request("a", 4, max_new_tokens=50))
    scheduler.add_request(make_request("b", 4, max_new_tokens=50))
    assert _shape(run_step(scheduler, runner)[0]) == [("a", 4), ("b", 4)]  # nothing decodes yet
    scheduler.add_request(make_request("big", 40))

    plans = [run_step(scheduler, runner)[0] for _ in range(3)]

    # Two decodes plus five prompt tokens a step; without decodes the whole 32 would go.
    assert [_shape(plan) for plan in plans] == [[("a", 1), ("b", 1), ("big", 5)]] * 3


def test_a_big_prompt_at_the_head_does_not_hold_back_the_queue_behind_it() -> None:
    scheduler = make_scheduler(
        num_blocks=40, block_size=4, max_step_tokens=16, max_prompt_tokens_while_decoding=4
    )
    runner = FakeRunner()
    scheduler.add_request(make_request("running", 4, max_new_tokens=60))
    run_step(scheduler, runner)
    big = make_request("big", 100)  # more blocks (25) than a chunk's, fewer than the cache's
    small = make_request("small", 3, max_new_tokens=2)
    scheduler.add_request(big)
    scheduler.add_request(small)

    steps_until_small_ran = 0
    while small.status is not RequestStatus.FINISHED:
        plan, _ = run_step(scheduler, runner)
        steps_until_small_ran += 1
        assert plan.requests[0].request_id == "running"  # the stream never skips a step
        assert plan.num_tokens <= 1 + 4 + 1  # its decode, one chunk, small's decode

    # big's 100 tokens take 25 steps of 4 beside the decode; small follows right after.
    assert steps_until_small_ran <= 25 + 2
    assert big.num_computed_tokens >= 100  # its prompt is done; it decodes
