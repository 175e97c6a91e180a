"""A linear layer over a weight that is dequantized a few output rows at a time, per call.

For formats with no torch kernel (NF4, FP4, fp8 on CPU), and for packed int4/int8 weights where
torch's kernel is not vectorised for the activations' dtype: each chunk is expanded to the
activation's dtype and multiplied by oneDNN's dense kernel, so the full-precision weight never
exists at once; the temporaries stay near `MAX_CHUNK_WEIGHTS` weights (2-4x that in bytes)."""

from collections.abc import Callable

import torch
import torch.nn.functional as F

MAX_CHUNK_WEIGHTS = 2**20  # 2 MiB of bf16 weight per chunk: fewer, larger matmuls measured faster

# Rows [start, end) of the weight, [end - start, input_size], in the given dtype.
Dequantize = Callable[[int, int, torch.dtype], torch.Tensor]


def chunked_linear(
    x: torch.Tensor,
    output_size: int,
    dequantize: Dequantize,
    bias: torch.Tensor | None,
    *,
    row_multiple: int = 1,
) -> torch.Tensor:
    """x: [..., input_size] -> [..., output_size], dequantizing the weight chunk by chunk, each
    chunk a multiple of `row_multiple` output rows but the last."""
    input_size = x.shape[-1]
    rows = x.reshape(-1, input_size)  # [num_tokens, input_size]
    num_tokens = rows.shape[0]
    if num_tokens == 1 and rows.dtype == torch.bfloat16 and rows.device.type == "cpu":
        # As in UnquantizedLinearMethod: oneDNN rounds a lone bf16 row differently from the same
        # row among others; two rows make a token's result independent of its batch.
        rows = rows.expand(2, -1)
    chunk_rows = max(1, MAX_CHUNK_WEIGHTS // input_size // row_multiple) * row_multiple
    pieces = []
    for start in range(0, output_size, chunk_rows):
        end = min(start + chunk_rows, output_size)
        pieces.append(F.linear(rows, dequantize(start, end, rows.dtype)))
    out = torch.cat(pieces, dim=1)[:num_tokens] if len(pieces) > 1 else pieces[0][:num_tokens]
    if bias is not None:
        out = out + bias
    return out.view(*x.shape[:-1], output_size)
