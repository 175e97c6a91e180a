"""Prompt logprobs (over chunked prefill) and top tokens from the runner on the embedded
SmolLM2 weights against transformers' float32 log-softmax, within 1e-3."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sluice.model.step import ScheduledRequest, StepPlan
from sluice.sampling_params import SamplingParams
from sluice.weights.sources import resolve_model
from tests.model.runner_driver import BLOCK_SIZE, build_runner

TOLERANCE = 1e-3
TOP_N = 5


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return resolve_model().path


@pytest.fixture(scope="module")
def prompt(model_dir: Path) -> list[int]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    question = "Explain in two sentences why rivers meander across flat plains."
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True
    )["input_ids"]


def _reference_log_probs(model_dir: Path, token_ids: list[int]) -> torch.Tensor:
    """[len(token_ids), vocab_size]: transformers' next-token logprobs at every position."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([token_ids])).logits[0].log_softmax(-1)


def _assert_top_tokens_match(ids: tuple[int, ...], logprobs: tuple[float, ...], row: torch.Tensor):
    expected = row.topk(TOP_N)
    assert len(ids) == TOP_N
    torch.testing.assert_close(torch.tensor(logprobs), expected.values, atol=TOLERANCE, rtol=0)
    # Ids agree except where two alternatives are tied within the tolerance.
    torch.testing.assert_close(row[list(ids)], expected.values, atol=TOLERANCE, rtol=0)


@pytest.mark.slow
def test_default_model_prompt_logprobs_and_top_tokens_match_transformers(
    model_dir: Path, prompt: list[int]
) -> None:
    runner = build_runner(model_dir, torch.float32)
    params = SamplingParams(max_new_tokens=2, top_n_tokens=TOP_N, prompt_logprobs=True)
    blocks = tuple(range(-(-(len(prompt) + 2) // BLOCK_SIZE)))
    bounds = [0, 7, 20, len(prompt)]  # three chunks, one ending mid-block
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        step = ScheduledRequest(
            "r",
            tuple(prompt[start:end]),
            start,
            len(prompt),
            blocks,
            params if end == len(prompt) else None,
            wants_prompt_logprobs=True,
        )
        output = runner.execute(StepPlan((step,)))
    (first,) = output.sampled
    decode = ScheduledRequest("r", (first.token_id,), len(prompt), len(prompt), blocks, params)
    (second,) = runner.execute(StepPlan((decode,))).sampled

    expected = _reference_log_probs(model_dir, [*prompt, first.token_id])
    prompt_expected = expected[:-2].gather(-1, torch.tensor(prompt[1:])[:, None]).squeeze(-1)
    assert len(first.prompt_logprobs) == len(prompt) - 1
    torch.testing.assert_close(
        torch.tensor(first.prompt_logprobs), prompt_expected, atol=TOLERANCE, rtol=0
    )
    assert first.token_id == int(expected[-2].argmax())
    assert first.logprob == pytest.approx(float(expected[-2].max()), abs=TOLERANCE)
    _assert_top_tokens_match(first.top_token_ids, first.top_logprobs, expected[-2])
    _assert_top_tokens_match(second.top_token_ids, second.top_logprobs, expected[-1])
    assert second.prompt_logprobs == ()
