"""AWQ GEMM checkpoints (AutoAWQ, `version: gemm`) -> `QuantizedWeight`.

Layout, 4 bits only: `qweight` int32 [input_size, output_size / 8] and `qzeros` int32
[num_groups, output_size / 8], both packed along the output with eight values per word, lowest
bits first, in AutoAWQ's interleaved order: bits 4i..4i+3 of word c hold output column
8c + [0, 2, 4, 6, 1, 3, 5, 7][i]. `scales` fp16 [num_groups, output_size]. Zero points are
stored as is (no GPTQ-style minus one); w = (q - z) * s."""

import torch

from sluice.quantization.packing import unpack_columns
from sluice.quantization.quantized_weight import QuantizedWeight

BITS = 4
# Column 8c + j sits at position AWQ_UNPACK_ORDER[j] of word c: the inverse of the packing order.
AWQ_UNPACK_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)


def convert_awq(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, *, group_size: int
) -> QuantizedWeight:
    """Unpack one AWQ GEMM linear; `group_size` -1 means one group per output channel."""
    for name, tensor in (("qweight", qweight), ("qzeros", qzeros)):
        if tensor.dtype != torch.int32 or tensor.dim() != 2:
            raise ValueError(f"AWQ {name} must be a 2-D int32 tensor, got {tensor.dtype}")
    input_size, output_size = qweight.shape[0], qweight.shape[1] * 8
    group_size = input_size if group_size == -1 else group_size
    if group_size <= 0 or input_size % group_size:
        raise ValueError(f"input size {input_size} is not divisible by group size {group_size}")
    num_groups = input_size // group_size
    expected = {"qzeros": (num_groups, output_size // 8), "scales": (num_groups, output_size)}
    for name, tensor in (("qzeros", qzeros), ("scales", scales)):
        if tuple(tensor.shape) != expected[name]:
            raise ValueError(
                f"AWQ {name} has shape {tuple(tensor.shape)}, expected {expected[name]} for "
                f"{input_size} inputs, {output_size} outputs, group size {group_size}"
            )
    q = _unpack_interleaved(qweight).t().contiguous()  # [output_size, input_size]
    zeros = _unpack_interleaved(qzeros)  # [num_groups, output_size]
    return QuantizedWeight(q, scales, zeros, BITS, group_size)


def _unpack_interleaved(packed: torch.Tensor) -> torch.Tensor:
    values = unpack_columns(packed, BITS).view(packed.shape[0], -1, 8)
    order = torch.tensor(AWQ_UNPACK_ORDER, device=packed.device)
    return values.index_select(2, order).reshape(packed.shape[0], -1)
