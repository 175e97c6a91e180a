"""A GGUF's block-quantized linears kept at conversion: in Hugging Face row order (llama.cpp's
rotary permutation of q and k undone), readable for `--quantize gguf`, refused with a message
where they cannot be served packed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from sluice.errors import ConfigError
from sluice.quantization.gguf_blocks import GgmlType, convert_gguf_blocks
from sluice.quantization.scheme import resolve_scheme
from sluice.weights.gguf_convert import convert_gguf
from sluice.weights.gguf_linears import gguf_linear_types, iter_gguf_packed_tensors

MakeGguf = Callable[..., Any]
LINEAR_COUNT = 2 * 7


def _dequantize(raw: torch.Tensor, ggml_type: torch.Tensor) -> torch.Tensor:
    return convert_gguf_blocks(raw, GgmlType(int(ggml_type))).dequantize()


def test_conversion_keeps_block_quantized_linears_in_model_row_order(
    make_tiny_gguf: MakeGguf, tmp_path: Path
) -> None:
    tiny = make_tiny_gguf(linear_types=("Q4_0", "Q4_1", "Q8_0"))
    out = convert_gguf(tiny.path, tmp_path / "out")

    assert gguf_linear_types(out) == ({GgmlType.Q4_0, GgmlType.Q4_1, GgmlType.Q8_0}, {})
    tensors = dict(iter_gguf_packed_tensors(out))
    blocks = sorted(name for name in tensors if name.endswith(".gguf_blocks"))
    assert len(blocks) == LINEAR_COUNT
    for name in blocks:
        prefix = name.removesuffix(".gguf_blocks")
        assert f"{prefix}.weight" not in tensors  # the dense copy is left out
        # q_proj and k_proj too: a row order error would move whole rows
        dequantized = _dequantize(tensors[name], tensors[f"{prefix}.gguf_type"])
        torch.testing.assert_close(dequantized, tiny.state[f"{prefix}.weight"], rtol=0, atol=1e-6)
    assert "model.embed_tokens.weight" in tensors and "model.norm.weight" in tensors


def test_float_linears_are_listed_as_not_packed(make_tiny_gguf: MakeGguf, tmp_path: Path) -> None:
    out = convert_gguf(make_tiny_gguf().path, tmp_path / "out")
    types, skipped = gguf_linear_types(out) or (None, None)
    assert types == set()
    assert len(skipped) == LINEAR_COUNT and set(skipped.values()) == {"F32"}
    with pytest.raises(ConfigError, match=r"14 of this GGUF's are not \(e.g. .*: F32\)"):
        resolve_scheme("gguf", out)


def test_gguf_scheme_needs_one_width(make_tiny_gguf: MakeGguf, tmp_path: Path) -> None:
    mixed = convert_gguf(make_tiny_gguf(linear_types=("Q4_1", "Q8_0")).path, tmp_path / "mixed")
    with pytest.raises(ConfigError, match="mixes Q4_1, Q8_0"):
        resolve_scheme("gguf", mixed)
    four = convert_gguf(
        make_tiny_gguf("4.gguf", linear_types=("Q4_0", "Q4_1")).path, tmp_path / "4"
    )
    scheme = resolve_scheme("gguf", four)
    assert scheme is not None and (scheme.bits, scheme.group_size) == (4, 32)


def test_gguf_scheme_needs_a_converted_gguf(tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="was not converted from a GGUF file"):
        resolve_scheme("gguf", tiny_model_dir)
