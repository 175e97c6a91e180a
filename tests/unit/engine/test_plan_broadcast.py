"""Plans travel to the other shards as diffs: new requests in full, running ones as their new
tokens and the blocks appended to their tables; the shards rebuild the plan rank 0 ran."""

import msgspec
import pytest

from sluice.engine.plan_broadcast import SAMPLES, PlanDecoder, PlanEncoder, WirePlan
from sluice.model.step import ScheduledRequest, StepPlan
from sluice.sampling_params import SamplingParams

PARAMS = SamplingParams(max_new_tokens=5, temperature=0.7, do_sample=True, seed=3)


def _request(
    request_id: str, tokens: tuple[int, ...], computed: int, blocks: tuple[int, ...], **kw: object
) -> ScheduledRequest:
    return ScheduledRequest(request_id, tokens, computed, 4, blocks, PARAMS, **kw)  # type: ignore[arg-type]


def _round_trip(
    encoder: PlanEncoder, decoder: PlanDecoder, plan: StepPlan
) -> tuple[WirePlan, StepPlan]:
    wire = encoder.encode(plan)
    # Through the bytes, as the shards receive it.
    wire = msgspec.msgpack.decode(msgspec.msgpack.encode(wire), type=WirePlan)
    return wire, decoder.decode(wire)


def test_running_requests_travel_as_appended_blocks() -> None:
    encoder, decoder = PlanEncoder(), PlanDecoder()
    prefill = StepPlan((_request("a", (1, 2, 3, 4), 0, (7,)), _request("b", (5, 6), 0, (8,))))
    wire, rebuilt = _round_trip(encoder, decoder, prefill)
    assert [w.new_blocks for w in wire.requests] == [[7], [8]]
    assert [r.block_ids for r in rebuilt.requests] == [(7,), (8,)]

    decode = StepPlan((_request("a", (9,), 4, (7, 11)), _request("b", (10,), 2, (8,))), ("c",))
    wire, rebuilt = _round_trip(encoder, decoder, decode)
    assert [(w.kept_blocks, w.new_blocks) for w in wire.requests] == [(1, [11]), (1, [])]
    assert [r.block_ids for r in rebuilt.requests] == [(7, 11), (8,)]
    assert [r.token_ids for r in rebuilt.requests] == [(9,), (10,)]
    assert rebuilt.finished_request_ids == ("c",)


def test_a_table_that_changed_otherwise_travels_whole() -> None:
    """A preempted request comes back with other blocks."""
    encoder, decoder = PlanEncoder(), PlanDecoder()
    _round_trip(encoder, decoder, StepPlan((_request("a", (1, 2), 0, (3, 4)),)))
    wire, rebuilt = _round_trip(encoder, decoder, StepPlan((_request("a", (1, 2), 0, (9, 4)),)))
    assert (wire.requests[0].kept_blocks, wire.requests[0].new_blocks) == (0, [9, 4])
    assert rebuilt.requests[0].block_ids == (9, 4)


def test_finished_requests_are_forgotten_on_both_sides() -> None:
    encoder, decoder = PlanEncoder(), PlanDecoder()
    _round_trip(encoder, decoder, StepPlan((_request("a", (1,), 0, (3,)),)))
    _round_trip(encoder, decoder, StepPlan((), ("a",)))
    wire, rebuilt = _round_trip(encoder, decoder, StepPlan((_request("a", (1,), 0, (3,)),)))
    assert wire.requests[0].kept_blocks == 0
    assert rebuilt.requests[0].block_ids == (3,)


def test_shards_learn_which_rows_get_logits_not_how_they_sample() -> None:
    encoder, decoder = PlanEncoder(), PlanDecoder()
    plan = StepPlan(
        (
            _request("a", (1, 2, 3), 2, (3,), num_draft_tokens=2, wants_prompt_logprobs=True),
            ScheduledRequest("b", (4, 5), 0, 8, (4,), None),
        )
    )
    _, rebuilt = _round_trip(encoder, decoder, plan)
    first, second = rebuilt.requests
    assert first.sampling is SAMPLES and second.sampling is None
    assert (first.num_draft_tokens, first.wants_prompt_logprobs) == (2, True)
    assert (second.num_computed_tokens, second.num_prompt_tokens) == (0, 8)


def test_a_plan_out_of_step_is_refused() -> None:
    encoder = PlanEncoder()
    encoder.encode(StepPlan((_request("a", (1,), 0, (3,)),)))
    wire = encoder.encode(StepPlan((_request("a", (2,), 1, (3, 4)),)))
    with pytest.raises(ValueError, match="keeps 1 blocks, this shard holds 0"):
        PlanDecoder().decode(wire)
