"""Dense weights re-laid in oneDNN's blocked format, once, after loading.

On CPUs `F.linear` hands float32 to a BLAS that re-reads the weight in its checkpoint layout
on every call; oneDNN's linear over a weight packed ahead for its own kernels runs the same
products 1.1-3x faster (the default model's shapes on a Zen 4: a decode step's matmuls take
11.0 ms against 18.4 at one row, 81 against 119 at 64 rows; see
bench/results/dense_linear_packing_<cpu kind>.md). bfloat16 weights are packed too where the
CPU has bf16 instructions (a decode step's matmuls 9.6 ms against 13.9 at one row, 50 against
59 at 64 rows there); the start-up batch-invariance check runs on packed weights."""

import logging

import torch
from torch import nn

from sluice.cpu import has_native_bf16
from sluice.model.layers.embedding import ParallelLMHead, VocabParallelEmbedding
from sluice.model.layers.linear import UnquantizedLinearMethod

logger = logging.getLogger(__name__)

PACKED_FOR_ROWS = 64
"""The row count oneDNN picks its blocking for; measured best from 1 to 256 rows."""


def packing_pays(dtype: torch.dtype, device: torch.device) -> bool:
    """float32 on any CPU; bfloat16 where the CPU has bf16 instructions (measured there, and
    oneDNN's emulation elsewhere is another kernel altogether)."""
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    return dtype == torch.float32 or (dtype == torch.bfloat16 and has_native_bf16())


def pack(weight: torch.Tensor) -> torch.Tensor:
    """[output_size, input_size] -> the same weight in oneDNN's layout (an opaque tensor)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACKED_FOR_ROWS)


def pack_dense_weights(model: nn.Module) -> None:
    """Pack every dense linear's weight in place, and the LM head's: as a second copy where
    the embedding shares it (its lookups need the plain layout), in place otherwise."""
    shared = {
        id(module.weight) for module in model.modules() if type(module) is VocabParallelEmbedding
    }
    extra_bytes = 0
    for module in model.modules():
        if isinstance(getattr(module, "method", None), UnquantizedLinearMethod):
            module.weight = nn.Parameter(pack(module.weight), requires_grad=False)
        elif isinstance(module, ParallelLMHead):
            if id(module.weight) in shared:
                module.packed_weight = pack(module.weight)
                extra_bytes += module.weight.numel() * module.weight.element_size()
            else:
                module.weight = nn.Parameter(pack(module.weight), requires_grad=False)
    if extra_bytes:
        logger.info(
            "packed the dense weights for oneDNN (a second copy of the LM head shared with "
            "the embedding: %.0f MB)",
            extra_bytes / 1e6,
        )
