"""Dense weights re-laid once, after loading, for the C++ linear kernel (kernels/linear.cpp).

The kernel reads a weight as panels of `PANEL` output features, each laid out input by input,
so that one pass streams it from memory: a single row runs at the read bandwidth where oneDNN's
matrix-vector product ran at half of it, and every row count goes through the same arithmetic,
so a token's outputs do not depend on the rows beside it, in float32 as in bfloat16 and on every
CPU (see bench/results/dense_linear_packing_<cpu kind>.md).

bfloat16 weights are kept as bfloat16. float32 weights are kept as bfloat16 too where that is
exact, as it is for a checkpoint stored in bfloat16 (most are): the kernel widens them back
to the same float32 values, so the results are the same bits and a matrix-vector product reads
half the bytes."""

import logging

import torch
from torch import nn

from sluice.model.kernels import packed_linear_kernel
from sluice.model.layers.embedding import ParallelLMHead, VocabParallelEmbedding
from sluice.model.layers.linear import UnquantizedLinearMethod

logger = logging.getLogger(__name__)

PANEL = 32
"""Output features per panel: linear.cpp's kPanel."""


def packs_weights(dtype: torch.dtype, device: torch.device) -> bool:
    """The kernel takes float32 and bfloat16 models on a CPU where it builds."""
    return (
        device.type == "cpu"
        and dtype in (torch.float32, torch.bfloat16)
        and packed_linear_kernel() is not None
    )


def pack(weight: torch.Tensor, *, narrow_exact_float32: bool = True) -> nn.Parameter:
    """[out_features, in_features] -> panels: float32 [panels, in, PANEL], or bfloat16
    [panels, in / 2, PANEL, 2] (pairs of inputs side by side) where the weight is bfloat16 or
    (`narrow_exact_float32`) float32 that bfloat16 holds exactly, and the input features pair
    up. The parameter carries `out_features` (the last panel is padded with zeros)."""
    weight = weight.detach()
    out_features, in_features = weight.shape
    panels = -(-out_features // PANEL)
    padded = torch.zeros(panels * PANEL, in_features, dtype=weight.dtype, device=weight.device)
    padded[:out_features] = weight
    as_bf16 = padded.to(torch.bfloat16)
    narrow = weight.dtype == torch.bfloat16 or (
        narrow_exact_float32 and torch.equal(as_bf16.to(weight.dtype), padded)
    )
    if narrow and in_features % 2 == 0:
        laid = as_bf16.view(panels, PANEL, in_features // 2, 2).permute(0, 2, 1, 3)
    elif weight.dtype == torch.float32:
        laid = padded.view(panels, PANEL, in_features).permute(0, 2, 1)
    else:
        raise ValueError(f"cannot pack a {weight.dtype} weight of {in_features} in_features")
    packed = nn.Parameter(laid.contiguous(), requires_grad=False)
    packed.out_features = out_features  # type: ignore[attr-defined]
    return packed


def pack_dense_weights(model: nn.Module) -> None:
    """Pack every dense linear's weight in place, and the LM head's: as a second copy where
    the embedding shares it (its lookups need the plain layout), in place otherwise. A
    bfloat16 weight whose input features do not pair up stays as it is (`F.linear`)."""
    shared = {
        id(module.weight) for module in model.modules() if type(module) is VocabParallelEmbedding
    }
    packed_bytes = extra_bytes = 0
    for module in model.modules():
        is_dense = isinstance(getattr(module, "method", None), UnquantizedLinearMethod)
        if not (is_dense or isinstance(module, ParallelLMHead)) or not _packable(module.weight):
            continue
        packed = pack(module.weight)
        size = packed.numel() * packed.element_size()
        packed_bytes += size
        if isinstance(module, ParallelLMHead) and id(module.weight) in shared:
            module.packed_weight = packed
            extra_bytes += size
        else:
            module.weight = packed
    logger.info(
        "packed the dense weights for the C++ linear kernel: %.0f MB%s",
        packed_bytes / 1e6,
        f", {extra_bytes / 1e6:.0f} MB of it the LM head's copy of the embedding"
        if extra_bytes
        else "",
    )


def _packable(weight: torch.Tensor) -> bool:
    return weight.dtype == torch.float32 or (
        weight.dtype == torch.bfloat16 and weight.shape[1] % 2 == 0
    )
