"""The unpacked form every converter produces and every quantized linear method consumes.

Holds integers, not floats: dequantizing is the kernel's job, at run time, group by group."""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sluice.distributed.sharding import Piece, copy_pieces, is_whole


@dataclass(frozen=True, slots=True)
class QuantizedWeight:
    """w[n, k] = (q[n, k] - zeros[k // group_size, n]) * scales[k // group_size, n].

    There are ceil(input_size / group_size) groups: where the group size does not divide the
    input, the last group is shorter (AutoGPTQ's layout).

    With `input_perm`, column k of `q` multiplies input feature `input_perm[k]`: the columns were
    reordered so that every group is contiguous (GPTQ act-order, see `gptq`)."""

    q: torch.Tensor  # [output_size, input_size] int32 in [0, 2**bits)
    scales: torch.Tensor  # [num_groups, output_size] float (fp16 in checkpoints)
    # [num_groups, output_size] int32 in [0, 2**bits); float where the format's zero point is
    # fractional (GGUF Q4_1), which only the int4 kernel takes
    zeros: torch.Tensor
    bits: int
    group_size: int  # input features per group; input_size when quantized per output channel
    input_perm: torch.Tensor | None = None  # [input_size] int64, or None for the identity

    def __post_init__(self) -> None:
        output_size, input_size = self.q.shape
        if not 0 < self.group_size <= input_size:
            raise ValueError(f"group size {self.group_size} for input size {input_size}")
        groups_shape = (self.num_groups, output_size)
        for name in ("scales", "zeros"):
            shape = tuple(getattr(self, name).shape)
            if shape != groups_shape:
                raise ValueError(f"{name} has shape {shape}, expected {groups_shape}")
        if self.input_perm is not None and tuple(self.input_perm.shape) != (input_size,):
            raise ValueError(
                f"input_perm has shape {tuple(self.input_perm.shape)}, expected ({input_size},)"
            )

    def dequantize(self) -> torch.Tensor:
        """[output_size, input_size] float32, columns in q's order: for checks and tests (the
        kernels dequantize group by group as they multiply)."""
        groups = torch.arange(self.input_size, device=self.q.device) // self.group_size
        return (self.q - self.zeros[groups].t()) * self.scales[groups].t().float()

    @property
    def num_groups(self) -> int:
        return -(-self.input_size // self.group_size)

    @property
    def output_size(self) -> int:
        return self.q.shape[0]

    @property
    def input_size(self) -> int:
        return self.q.shape[1]

    def take_outputs(self, pieces: Sequence[Piece]) -> "QuantizedWeight":
        """A column-parallel shard's part: these output features, in order (padding: zero
        weights)."""
        if is_whole(pieces, self.output_size):
            return self
        return QuantizedWeight(
            q=_take(self.q, 0, pieces),
            scales=_take(self.scales, 1, pieces),
            zeros=_take(self.zeros, 1, pieces),
            bits=self.bits,
            group_size=self.group_size,
            input_perm=self.input_perm,
        )

    def take_inputs(self, pieces: Sequence[Piece]) -> "QuantizedWeight":
        """A row-parallel shard's part: these input features, in order (padding: zero
        weights). Pieces must hold whole quantization groups, and act-order weights (whose
        groups are not contiguous in input order) cannot be split at all."""
        if is_whole(pieces, self.input_size):
            return self
        if self.input_perm is not None:
            raise ValueError("act-order (desc_act) weights cannot be split along their inputs")
        group = self.group_size
        for index, piece in enumerate(pieces):
            ends_input = piece.start is not None and piece.start + piece.size == self.input_size
            last = index == len(pieces) - 1
            if (piece.start or 0) % group or (piece.size % group and not (ends_input and last)):
                raise ValueError(
                    f"a shard's {piece.size} input features from {piece.start} cut the weight's "
                    f"quantization groups of {group}"
                )
        group_pieces = [
            Piece(None if p.start is None else p.start // group, -(-p.size // group))
            for p in pieces
        ]
        return QuantizedWeight(
            q=_take(self.q, 1, pieces),
            scales=_take(self.scales, 0, group_pieces),
            zeros=_take(self.zeros, 0, group_pieces),
            bits=self.bits,
            group_size=group,
        )


def _take(tensor: torch.Tensor, dim: int, pieces: Sequence[Piece]) -> torch.Tensor:
    shape = list(tensor.shape)
    shape[dim] = sum(piece.size for piece in pieces)
    out = tensor.new_empty(shape)
    copy_pieces(out, tensor, dim, pieces)
    return out
