"""`--quantize` methods that quantize the embedded SmolLM2 weights at load (bitsandbytes and
eetq int8, bitsandbytes-nf4/-fp4, fp8): the projections hold packed weights, and the model
still predicts mostly what the full-precision one predicts over a prompt."""

import pytest
import torch
from transformers import AutoTokenizer

from sluice.weights.sources import resolve_model
from tests.model.runner_driver import build_runner, prefill_logits

PROMPT = (
    "<|im_start|>user\nExplain in two sentences why the sky is blue during the day and red at "
    "sunset.<|im_end|>\n<|im_start|>assistant\nSunlight is scattered by the air"
)
# Share of prompt positions whose most likely next token matches full precision's (measured:
# int8 agrees almost everywhere, fp8 on 0.88; 4-bit codebooks lose more).
AGREEMENT = {
    "eetq": 0.9,
    "bitsandbytes": 0.9,
    "fp8": 0.8,
    "bitsandbytes-nf4": 0.6,
    "bitsandbytes-fp4": 0.5,
}
BYTES_PER_WEIGHT = {
    "eetq": 1.01,
    "bitsandbytes": 1.01,
    "fp8": 1.01,
    "bitsandbytes-nf4": 0.57,
    "bitsandbytes-fp4": 0.57,
}


@pytest.fixture(scope="module")
def full_precision() -> tuple[list[int], torch.Tensor]:
    path = resolve_model().path
    token_ids = AutoTokenizer.from_pretrained(path)(PROMPT)["input_ids"]
    return token_ids, prefill_logits(build_runner(path, torch.bfloat16), token_ids)


@pytest.mark.slow
@pytest.mark.parametrize("method", AGREEMENT)
def test_on_the_fly_quantization_packs_weights_and_keeps_predictions(
    method: str, full_precision: tuple[list[int], torch.Tensor]
) -> None:
    token_ids, expected = full_precision

    runner = build_runner(resolve_model().path, torch.bfloat16, quantize=method)

    down_proj = runner.model.layers[0].mlp.down_proj
    assert not hasattr(down_proj, "weight")
    stored = sum(p.numel() * p.element_size() for p in down_proj.parameters(recurse=False))
    assert stored <= BYTES_PER_WEIGHT[method] * 576 * 1536 + 4 * 576
    logits = prefill_logits(runner, token_ids)
    agreement = (logits.argmax(-1) == expected.argmax(-1)).float().mean().item()
    assert agreement >= AGREEMENT[method], f"{method}: {agreement:.2f}"
