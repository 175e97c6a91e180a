"""A shard's part cut out of packed GPTQ and AWQ tensors before unpacking holds the same
weights as the whole weight unpacked and then cut (padding: zero weights)."""

import pytest
import torch

from sluice.distributed.sharding import Piece, copy_pieces
from sluice.model.packed_slicing import DROPPED, cut, part_axes
from sluice.quantization.awq import convert_awq
from sluice.quantization.gptq import convert_gptq
from tests.unit.quantization.reference import pack_awq, pack_gptq, quantize

OUTPUTS, INPUTS, GROUP = 192, 256, 64
OUTPUT_PIECES = [Piece(64, 64), Piece(None, 64), Piece(0, 64)]
INPUT_PIECES = [Piece(128, 128), Piece(None, 64)]


def _expected(dense: torch.Tensor, pieces: list[Piece], side: int) -> torch.Tensor:
    shape = list(dense.shape)
    shape[side] = sum(piece.size for piece in pieces)
    expected = dense.new_empty(shape)
    copy_pieces(expected, dense, side, pieces)
    return expected


def _cut_parts(method: str, parts: dict, pieces: list[Piece], side: int) -> dict:
    total = (OUTPUTS, INPUTS)[side]
    mine = {}
    for name, tensor in parts.items():
        axis = part_axes(method, name, bits=4, group_size=GROUP)[side]
        if axis is None:
            mine[name] = tensor
        elif axis is not DROPPED:
            mine[name] = cut(tensor, axis, pieces, total)
    return mine


@pytest.mark.parametrize(("side", "pieces"), [(0, OUTPUT_PIECES), (1, INPUT_PIECES)])
def test_gptq_parts_cut_before_unpacking(side: int, pieces: list[Piece]) -> None:
    ref = quantize(OUTPUTS, INPUTS, bits=4, group_size=GROUP, symmetric=True)
    parts = _cut_parts("gptq", pack_gptq(ref, v1=True), pieces, side)
    weight = convert_gptq(
        parts["qweight"],
        parts["qzeros"],
        parts["scales"],
        parts.get("g_idx"),
        bits=4,
        group_size=GROUP,
    )
    expected = _expected(ref.dequantize(), pieces, side)
    assert torch.allclose(weight.dequantize().double(), expected, atol=1e-3)


@pytest.mark.parametrize(("side", "pieces"), [(0, OUTPUT_PIECES), (1, INPUT_PIECES)])
def test_awq_parts_cut_before_unpacking(side: int, pieces: list[Piece]) -> None:
    ref = quantize(OUTPUTS, INPUTS, bits=4, group_size=GROUP, symmetric=False)
    parts = _cut_parts("awq", pack_awq(ref), pieces, side)
    weight = convert_awq(parts["qweight"], parts["qzeros"], parts["scales"], group_size=GROUP)
    expected = _expected(ref.dequantize(), pieces, side)
    assert torch.allclose(weight.dequantize().double(), expected, atol=1e-3)


def test_pieces_that_cut_a_packed_unit_are_refused() -> None:
    ref = quantize(OUTPUTS, INPUTS, bits=4, group_size=GROUP, symmetric=True)
    with pytest.raises(ValueError, match="do not fall on whole units of 64 features"):
        _cut_parts("gptq", pack_gptq(ref, v1=True), [Piece(32, 64)], 1)
