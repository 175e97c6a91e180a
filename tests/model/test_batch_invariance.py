"""Greedy output in bfloat16 and float32 does not depend on load, where the kernels allow it
(the engine's start-up check): a prompt decoded alone, with one step's budget, gives the tokens it
gives among other requests whose prompts are cut into chunks of another size, on the real
scheduler and runner with the embedded SmolLM2 weights."""

import pytest
import torch
from transformers import AutoTokenizer

from sluice.bench.workloads import load_workload
from sluice.sampling_params import SamplingParams
from sluice.weights.sources import resolve_model
from tests.model.runner_driver import (
    build_runner,
    generate,
    skip_unless_batch_invariant,
)

MAX_NEW_TOKENS = 32


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_greedy_output_is_the_same_alone_and_in_a_chunked_batch(dtype: torch.dtype) -> None:
    path = resolve_model().path
    tokenizer = AutoTokenizer.from_pretrained(path)
    prompts = [tokenizer(text)["input_ids"] for text in load_workload("w2").prompts[:4]]
    runner = build_runner(path, dtype, num_blocks=96)
    skip_unless_batch_invariant(runner, dtype)
    greedy = SamplingParams(max_new_tokens=MAX_NEW_TOKENS, ignore_eos=True)

    alone = generate(runner, prompts[:1], [greedy], run="alone")
    together = generate(runner, prompts, [greedy] * 4, run="together", max_step_tokens=40)

    assert together.outputs[0] == alone.outputs[0]
