"""Reads torch's CPU int4-packed weights back: the 4-bit codes of a range of output rows.

`_convert_weight_to_int4pack_for_cpu` lays the codes out for the kernel of the CPU's vector
width (aten/src/ATen/native/cpu/int4mm_kernel.cpp): output features in blocks of 64 (AVX-512)
or 32 (AVX2), each block stored input feature by input feature, one byte holding a feature of
the block's first half in its low nibble and the feature half a block later in its high one.
A last, narrower block, and every block where the kernel is not vectorised, holds neighbouring
pairs instead (feature 2i low, 2i + 1 high). Which layout this torch uses is found by packing
a probe (`cpu_packed_layout`), not assumed from the CPU."""

import functools
from dataclasses import dataclass

import torch

PROBE_OUTPUT_SIZE = 112
"""A full block and a narrower last one for blocks of 64 (64 + 48) and of 32 (3 x 32 + 16)."""
PROBE_INPUT_SIZE = 64


@dataclass(frozen=True)
class PackedLayout:
    block_size: int
    """Output features per block; a narrower last block holds pairs."""
    halves: bool
    """Full blocks pair feature d with d + block_size / 2 (vectorised kernels); else d + 1."""

    def unpack(self, packed: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """The uint8 codes [end - start, input_size] of output rows [start, end) of `packed`
        ([output_size, input_size / 2]); `start` and `end` fall on block starts, or `end` on
        the output size."""
        output_size, input_size = packed.shape[0], packed.shape[1] * 2
        if start % self.block_size or (end % self.block_size and end != output_size):
            raise ValueError(f"rows [{start}, {end}) do not start and end on blocks")
        flat = packed.view(-1)
        full_end = min(end, output_size // self.block_size * self.block_size)
        pieces = []
        if full_end > start:
            num_blocks = (full_end - start) // self.block_size
            blocks = flat[start * input_size // 2 : full_end * input_size // 2]
            pieces.append(
                _unpack_blocks(blocks.view(num_blocks, input_size, -1), halves=self.halves)
            )
        if end > full_end:  # the narrower last block
            last = flat[full_end * input_size // 2 : end * input_size // 2]
            pieces.append(_unpack_blocks(last.view(1, input_size, -1), halves=False))
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


CANDIDATE_LAYOUTS = (PackedLayout(64, halves=True), PackedLayout(32, halves=True))
NON_VECTORISED_LAYOUT = PackedLayout(32, halves=False)


@functools.cache
def cpu_packed_layout() -> PackedLayout | None:
    """The layout of this torch's CPU int4 packing on this CPU, or None if it is none known."""
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (PROBE_OUTPUT_SIZE, PROBE_INPUT_SIZE), generator=generator)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.int(), 1)
    for layout in (*CANDIDATE_LAYOUTS, NON_VECTORISED_LAYOUT):
        if torch.equal(layout.unpack(packed, 0, PROBE_OUTPUT_SIZE).long(), codes):
            return layout
    return None


def _unpack_blocks(blocks: torch.Tensor, *, halves: bool) -> torch.Tensor:
    """[num_blocks, input_size, block_size / 2] bytes -> [num_blocks * block_size, input_size]."""
    low, high = blocks & 0xF, blocks >> 4
    if halves:
        codes = torch.cat((low, high), dim=-1)
    else:
        codes = torch.stack((low, high), dim=-1).flatten(-2)
    return codes.transpose(1, 2).reshape(-1, blocks.shape[1])
