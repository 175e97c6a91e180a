"""ModelRunner's per-request state on a fake model whose logits at a position are a fixed
random row of the token there: penalties count prompt and output tokens across chunked
prefill, preemption and re-runs; prompt logprobs survive chunking; state goes with the request."""

import math
from concurrent.futures import Future
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from sluice.model.attention.backend import BatchLayout
from sluice.model.runner import ModelRunner
from sluice.model.sampling.sampler import TokenMasks
from sluice.model.step import ScheduledRequest, StepPlan
from sluice.sampling_params import SamplingParams

VOCAB = 32
FAVOURITE = 5
"""Every position's most likely next token, by a margin a penalty can overturn."""


class FakeModel(nn.Module):
    """hidden = a fixed random row per token id; logits = hidden."""

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(vocab_size=VOCAB)
        table = torch.randn(VOCAB, VOCAB, generator=torch.Generator().manual_seed(0))
        table[:, FAVOURITE] = 6.0
        self.table = table

    def forward(self, token_ids, positions, kv_caches, metadata) -> torch.Tensor:  # noqa: ANN001
        return self.table[token_ids]

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden.float()


class NoAttention:
    def build_metadata(self, layout: BatchLayout, device: torch.device) -> None:
        return None


def _runner() -> ModelRunner:
    return ModelRunner(FakeModel(), NoAttention(), [], 16, torch.device("cpu"))  # type: ignore[arg-type]


def _step(
    request_id: str,
    token_ids: list[int],
    start: int,
    num_prompt: int,
    sampling: SamplingParams | None,
    *,
    prompt_logprobs: bool = False,
) -> ScheduledRequest:
    """Requests whose id starts with "pen" have a penalty (on every step, sampling or not)."""
    return ScheduledRequest(
        request_id,
        tuple(token_ids),
        start,
        num_prompt,
        (),
        sampling,
        counts_tokens=request_id.startswith("pen"),
        wants_prompt_logprobs=prompt_logprobs,
    )


PENALISED = SamplingParams(max_new_tokens=8, repetition_penalty=10.0, frequency_penalty=1.0)


def _expected_logprobs(sequence: list[int], candidate: int) -> float:
    """log p(candidate) after both penalties over `sequence`, by hand."""
    logits = FakeModel().table[sequence[-1]].clone()
    for token in set(sequence):
        value = logits[token]
        logits[token] = value * 10.0 if value < 0 else value / 10.0
        logits[token] -= sequence.count(token) / len(sequence) * 1.0
    return float(logits.log_softmax(-1)[candidate])


def test_runner_penalty_sees_prompt_tokens_from_every_chunk() -> None:
    runner = _runner()
    prompt = [FAVOURITE, 1, 2, 3, 4, 6]
    solo = runner.execute(StepPlan((_step("plain", prompt, 0, 6, SamplingParams(1)),)))
    assert solo.sampled[0].token_id == FAVOURITE  # unpenalised, the favourite wins

    runner.execute(StepPlan((_step("pen", prompt[:3], 0, 6, None),)))  # FAVOURITE is here
    out = runner.execute(StepPlan((_step("pen", prompt[3:], 3, 6, PENALISED),)))

    sampled = out.sampled[0]
    assert sampled.token_id != FAVOURITE
    assert sampled.logprob == pytest.approx(_expected_logprobs(prompt, sampled.token_id), abs=1e-5)


def test_runner_penalty_counts_outputs_and_survives_recompute_and_reruns() -> None:
    runner = _runner()
    prompt = [1, 2, 3]
    first = runner.execute(StepPlan((_step("pen", prompt, 0, 3, PENALISED),))).sampled[0]
    sequence = [*prompt, first.token_id]
    assert first.token_id == FAVOURITE
    # Preempted: everything is recomputed from position 0, then the same step runs twice
    # (a failed batch is re-run request by request).
    recompute = _step("pen", sequence, 0, 3, PENALISED)
    again = [runner.execute(StepPlan((recompute,))).sampled[0] for _ in range(2)]

    for sampled in again:
        assert sampled.token_id != FAVOURITE  # the output token is penalised
        expected = _expected_logprobs(sequence, sampled.token_id)
        assert sampled.logprob == pytest.approx(expected, abs=1e-5)  # counted once, not thrice


def test_runner_mixed_batch_penalises_only_its_penalised_row() -> None:
    runner = _runner()
    plain = _step("plain", [FAVOURITE, 1], 0, 2, SamplingParams(1))
    penalised = _step("pen", [FAVOURITE, 1], 0, 2, PENALISED)

    out = runner.execute(StepPlan((plain, penalised)))

    assert out.sampled[0].token_id == FAVOURITE
    assert out.sampled[1].token_id != FAVOURITE


def test_runner_drops_state_of_finished_requests() -> None:
    runner = _runner()
    runner.execute(StepPlan((_step("pen", [FAVOURITE, 1], 0, 2, PENALISED),)))
    runner.execute(StepPlan((_step("p", [1, 2, 3], 0, 5, None, prompt_logprobs=True),)))

    runner.execute(StepPlan((), finished_request_ids=("pen", "p")))

    assert "pen" not in runner._token_counts
    assert runner._prompt_logprobs.take("p") == ()
    # A new request may reuse the slot: it starts from zero counts.
    out = runner.execute(StepPlan((_step("pen2", [1, 2], 0, 2, PENALISED),)))
    assert out.sampled[0].token_id == FAVOURITE


def test_runner_skipping_positions_of_a_penalised_request_fails_loudly() -> None:
    with pytest.raises(RuntimeError, match="skipped positions"):
        _runner().execute(StepPlan((_step("pen", [1, 2], 4, 6, PENALISED),)))


@pytest.mark.parametrize("chunks", [[7], [3, 4], [1, 1, 5], [2, 2, 2, 1]])
def test_runner_prompt_logprobs_survive_chunked_prefill(chunks: list[int]) -> None:
    runner = _runner()
    prompt = [3, 9, 9, 1, 0, 30, 12]
    table = FakeModel().table
    expected = [
        float(table[a].log_softmax(-1)[b]) for a, b in zip(prompt[:-1], prompt[1:], strict=True)
    ]
    start, outputs = 0, []
    for size in chunks:
        done = start + size == len(prompt)
        piece = prompt[start : start + size]
        step = _step(
            "r", piece, start, 7, SamplingParams(1) if done else None, prompt_logprobs=True
        )
        outputs += runner.execute(StepPlan((step,))).sampled
        if (
            start > 0 and not done
        ):  # a failed step is re-run: writing the same positions again is harmless
            runner.execute(StepPlan((step,)))
        start += size

    assert len(outputs) == 1
    assert outputs[0].prompt_logprobs == pytest.approx(expected, abs=1e-5)


def test_runner_prompt_logprobs_of_a_one_token_prompt_are_empty() -> None:
    step = _step("r", [4], 0, 1, SamplingParams(1), prompt_logprobs=True)

    (sampled,) = _runner().execute(StepPlan((step,))).sampled

    assert sampled.prompt_logprobs == ()
    assert not math.isnan(sampled.logprob)


def test_runner_applies_grammar_masks_to_their_rows() -> None:
    """The masks arrive as a future (computed beside the forward pass) and hold only their own
    row: the free request still takes its favourite."""
    runner = _runner()
    bitmask = torch.zeros(1, 1, dtype=torch.int32)
    bitmask[0, 0] = 1 << 3  # only token 3
    masks: Future[TokenMasks] = Future()
    masks.set_result(TokenMasks(rows=(1,), bitmask=bitmask))
    plan = StepPlan(
        (
            _step("free", [1, 2], 0, 2, SamplingParams(1)),
            _step("json", [1, 2], 0, 2, SamplingParams(1)),
        )
    )

    out = runner.execute(plan, masks)

    assert [s.token_id for s in out.sampled] == [FAVOURITE, 3]
    assert out.sampled[1].logprob == 0.0  # the only allowed token
