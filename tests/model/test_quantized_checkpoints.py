"""GPTQ and AWQ checkpoints of the embedded SmolLM2 weights load into packed int4/int8 linears
(detected from config.json) and compute what the same model with the dequantized weights
computes, in float32."""

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from sluice.weights.sources import resolve_model
from tests.model.quantized_checkpoints import write_quantized_pair
from tests.model.runner_driver import TEST_DEVICE, build_runner, prefill_logits

PROMPT = (
    "<|im_start|>user\nWhy is the sea salty? Answer briefly.<|im_end|>\n<|im_start|>assistant\n"
)
SCHEMES = {
    "gptq-4bit-sym": {"quant_method": "gptq", "bits": 4, "group_size": 64, "sym": True},
    "gptq-4bit-asym-act-order": {
        "quant_method": "gptq",
        "bits": 4,
        "group_size": 64,
        "sym": False,
        "desc_act": True,
    },
    "gptq-8bit-per-channel": {"quant_method": "gptq", "bits": 8, "group_size": -1, "sym": True},
    "awq-4bit": {
        "quant_method": "awq",
        "bits": 4,
        "group_size": 64,
        "zero_point": True,
        "version": "gemm",
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=SCHEMES.keys())
def test_quantized_checkpoint_computes_what_its_dequantized_weights_compute(
    tmp_path: Path, scheme: dict[str, object]
) -> None:
    if scheme["bits"] == 4 and TEST_DEVICE.type != "cpu":
        pytest.skip("int4 linears run on the CPU only (sluice/quantization/int4_linear.py)")
    source = resolve_model().path
    write_quantized_pair(source, tmp_path / "quantized", tmp_path / "dequantized", scheme)
    token_ids = AutoTokenizer.from_pretrained(source)(PROMPT)["input_ids"]

    quantized = build_runner(tmp_path / "quantized", torch.float32)
    dequantized = build_runner(tmp_path / "dequantized", torch.float32)

    down_proj = quantized.model.layers[0].mlp.down_proj
    assert not hasattr(down_proj, "weight")  # packed, not dense
    assert down_proj.qweight.element_size() * down_proj.qweight.numel() <= 576 * 1536
    expected = prefill_logits(dequantized, token_ids)
    logits = prefill_logits(quantized, token_ids)
    torch.testing.assert_close(logits, expected, rtol=0, atol=2e-2)
    assert torch.equal(logits.argmax(-1), expected.argmax(-1))
