"""GGUF (ggml) block-quantized weights -> `QuantizedWeight`, for Q4_0, Q4_1 and Q8_0.

A ggml tensor [rows, cols] is stored row by row in blocks of 32 consecutive values of a row,
so a block is a group of 32 input features of one output feature. Per block, little-endian:
- Q4_0: fp16 d, then 16 bytes; byte j holds value j in its low nibble and value j + 16 in its
  high nibble; w = d * (q - 8).
- Q4_1: fp16 d, fp16 m, then the same 16 bytes; w = d * q + m.
- Q8_0: fp16 d, then 32 int8 q; w = d * q.
Q4_0 and Q8_0 are integer zero points as GPTQ's; Q4_1's m is any float, so its zero point
-m / d is fractional, which the int4 kernel takes as is (it adds a float zero per group)."""

from enum import IntEnum
from typing import Final

import torch

from sluice.quantization.quantized_weight import QuantizedWeight

BLOCK: Final = 32


class GgmlType(IntEnum):
    """ggml's numbers for the block types served packed (GGMLQuantizationType in `gguf`)."""

    Q4_0 = 2
    Q4_1 = 3
    Q8_0 = 8

    @property
    def bits(self) -> int:
        return 8 if self is GgmlType.Q8_0 else 4

    @property
    def block_bytes(self) -> int:
        return {GgmlType.Q4_0: 18, GgmlType.Q4_1: 20, GgmlType.Q8_0: 34}[self]


def convert_gguf_blocks(raw: torch.Tensor, ggml_type: GgmlType) -> QuantizedWeight:
    """raw: uint8 [rows, cols / 32 * block_bytes], the tensor's bytes row by row."""
    if raw.dtype != torch.uint8 or raw.dim() != 2 or raw.shape[1] % ggml_type.block_bytes:
        raise ValueError(
            f"{ggml_type.name} data must be uint8 rows of whole {ggml_type.block_bytes}-byte "
            f"blocks, got {raw.dtype} {tuple(raw.shape)}"
        )
    rows = raw.shape[0]
    blocks = raw.reshape(rows, -1, ggml_type.block_bytes)  # [rows, blocks, bytes]
    scales = _fp16(blocks[:, :, 0:2])  # [rows, blocks]
    if ggml_type is GgmlType.Q8_0:
        q = blocks[:, :, 2:].contiguous().view(torch.int8).to(torch.int32) + 128
        zeros = torch.full_like(scales, 128, dtype=torch.int32)
        return _weight(q, scales, zeros, ggml_type)
    nibbles = blocks[:, :, 4:] if ggml_type is GgmlType.Q4_1 else blocks[:, :, 2:]
    q = torch.cat((nibbles & 0x0F, nibbles >> 4), dim=2).to(torch.int32)  # [rows, blocks, 32]
    if ggml_type is GgmlType.Q4_0:
        return _weight(q, scales, torch.full_like(scales, 8, dtype=torch.int32), ggml_type)
    return _weight(q, *_q4_1_grid(scales, _fp16(blocks[:, :, 2:4])), ggml_type)


def _q4_1_grid(d: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero point) with (q - zero) * scale = d * q + m. A block of equal values has
    d = 0 and q = 0: w = m is then written as (0 - zero) * |m| / 8 with zero = -8 sign(m)."""
    flat = d == 0
    scale = torch.where(flat, torch.where(m == 0, 1.0, m.abs() / 8), d)
    return scale, -m / scale


def _fp16(pairs: torch.Tensor) -> torch.Tensor:
    """[..., 2] little-endian bytes -> [...] float32."""
    return pairs.contiguous().view(torch.float16).squeeze(-1).float()


def _weight(
    q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, ggml_type: GgmlType
) -> QuantizedWeight:
    rows = q.shape[0]
    return QuantizedWeight(
        q.reshape(rows, -1).contiguous(),
        scales.t().contiguous(),
        zeros.t().contiguous(),
        ggml_type.bits,
        BLOCK,
    )
