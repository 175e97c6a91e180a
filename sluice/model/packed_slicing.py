"""Cuts a tensor-parallel shard's part out of a quantized linear's checkpoint tensors before
they are unpacked, so that a shard reads only its slices of the memory-mapped checkpoint, as
for dense weights.

Each part (GPTQ's qweight, qzeros, scales; AWQ's; a GGUF's blocks; a dense weight quantized at
load) counts the linear's output and input features along some dimension, in its own units:
a 4-bit qweight holds 8 input features a row (GPTQ) or 8 output features a column (AWQ), a
scales row stands for a quantization group of inputs, a GGUF row of bytes holds 32 inputs a
block. A shard's pieces must fall on those units' boundaries (the support check refuses the
splits that would not); padding becomes zeros, whose scales make the padded weights zero."""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sluice.distributed.sharding import Piece, is_whole
from sluice.quantization.gguf_blocks import GgmlType


@dataclass(frozen=True, slots=True)
class Axis:
    """Dimension `dim` holds `entries` entries for every `features` features."""

    dim: int
    features: int
    entries: int = 1


WHOLE = Axis(0, 0)
"""A dimension that a split keeps whole (one group per output channel)."""
DROPPED = Axis(0, -1)
"""A part a split of its inputs drops (GPTQ's g_idx: without act order, whose splits are
refused, the groups are contiguous and the unpacker needs no index)."""


def part_axes(
    method: str, part: str, *, bits: int, group_size: int, gguf_type: GgmlType | None = None
) -> tuple[Axis | None, Axis | None]:
    """(output axis, input axis) of one checkpoint part; None where the part does not span
    that side (it is kept whole)."""
    groups = WHOLE if group_size == -1 else Axis(0, group_size)
    if part == "weight":  # full precision, quantized at load
        return Axis(0, 1), Axis(1, 1)
    if method == "gptq":
        per_word = 32 // bits
        return {
            "qweight": (Axis(1, 1), Axis(0, per_word)),
            "qzeros": (Axis(1, per_word), groups),
            "scales": (Axis(1, 1), groups),
            "g_idx": (None, DROPPED),
        }[part]
    if method == "awq":
        return {
            "qweight": (Axis(1, 8), Axis(0, 1)),
            "qzeros": (Axis(1, 8), groups),
            "scales": (Axis(1, 1), groups),
        }[part]
    if part == "gguf_blocks":
        assert gguf_type is not None
        return Axis(0, 1), Axis(1, 32, gguf_type.block_bytes)
    return None, None  # gguf_type


def cut(tensor: torch.Tensor, axis: Axis, pieces: Sequence[Piece], total: int) -> torch.Tensor:
    """The entries of `tensor` along `axis` that stand for `pieces` of `total` features."""
    if axis is WHOLE:
        if any(piece.start is None for piece in pieces):
            raise ValueError("weights with one scale per output channel cannot be padded")
        return tensor
    if is_whole(pieces, total):
        return tensor
    size = tensor.shape[axis.dim]
    parts = []
    for piece in pieces:
        start = (piece.start or 0) * axis.entries
        end = start + piece.size * axis.entries
        if start % axis.features or (end % axis.features and -(-end // axis.features) != size):
            raise ValueError(
                f"{piece.size} features from {piece.start} do not fall on whole units of "
                f"{axis.features} features"
            )
        count = -(-end // axis.features) - start // axis.features
        if piece.start is None:
            shape = list(tensor.shape)
            shape[axis.dim] = count
            parts.append(tensor.new_zeros(shape))
        else:
            parts.append(tensor.narrow(axis.dim, start // axis.features, count))
    return torch.cat(parts, dim=axis.dim) if len(parts) > 1 else parts[0].contiguous()
