"""`--quantize gguf`: a GGUF's Q4_0/Q4_1/Q8_0 linears run on the packed int4/int8 kernels and
compute what the dequantized weights compute, on tiny GGUFs of each type and on the embedded
SmolLM2 (Q4_1)."""

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from sluice.weights.gguf_convert import convert_gguf
from sluice.weights.sources import resolve_model
from tests.model.runner_driver import build_runner, prefill_logits
from tests.unit.weights.conftest import write_tiny_gguf

PROMPT = (
    "<|im_start|>user\nExplain in two sentences why the sky is blue during the day and red at "
    "sunset.<|im_end|>\n<|im_start|>assistant\nSunlight is scattered by the air"
)


@pytest.mark.parametrize("linear_types", [("Q4_0", "Q4_1"), ("Q8_0",)])
def test_packed_gguf_linears_compute_what_the_dequantized_ones_do(
    tmp_path: Path, linear_types: tuple[str, ...]
) -> None:
    gguf_path = tmp_path / "tiny.gguf"
    write_tiny_gguf(gguf_path, is_tied=False, linear_types=linear_types)
    converted = convert_gguf(gguf_path, tmp_path / "converted")
    token_ids = [3, 10, 4, 5, 9, 6, 11, 7]

    dense = prefill_logits(build_runner(converted, torch.float32), token_ids)
    packed_runner = build_runner(converted, torch.float32, quantize="gguf")

    assert not hasattr(packed_runner.model.layers[0].self_attn.qkv_proj, "weight")
    packed = prefill_logits(packed_runner, token_ids)
    torch.testing.assert_close(packed, dense, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_embedded_q4_1_model_served_packed_matches_its_dequantized_weights() -> None:
    path = resolve_model().path
    token_ids = AutoTokenizer.from_pretrained(path)(PROMPT)["input_ids"]
    dense = prefill_logits(build_runner(path, torch.float32), token_ids)

    runner = build_runner(path, torch.float32, quantize="gguf")

    down_proj = runner.model.layers[0].mlp.down_proj
    stored = sum(p.numel() * p.element_size() for p in down_proj.parameters(recurse=False))
    # half a byte per weight, plus a float32 scale and zero per 32 weights
    assert stored == 576 * 1536 // 2 + 576 * 1536 // 32 * 2 * 4
    packed = prefill_logits(runner, token_ids)
    assert bool((packed.argmax(-1) == dense.argmax(-1)).all())
    assert float((packed - dense).abs().max()) < 1e-3 * float(dense.abs().max())
