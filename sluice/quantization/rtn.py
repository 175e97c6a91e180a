"""Round-to-nearest quantization of a dense weight at load time, and the int8 method built on it.

TGI's `bitsandbytes` (LLM.int8) and `eetq` both store int8 weights with one scale per output
feature; here both mean `Int8OnTheFlyLinearMethod`: symmetric per-channel int8 (scale = absmax /
127, zero point 128 in `QuantizedWeight`'s unsigned convention) run by `Int8LinearMethod`.
LLM.int8's outlier columns in fp16 are not reproduced: weight-only int8 needs no outlier split."""

import torch
from torch import nn

from sluice.quantization.int8_linear import Int8LinearMethod
from sluice.quantization.quantized_weight import QuantizedWeight


def quantize_rtn(weight: torch.Tensor, bits: int, group_size: int, sym: bool) -> QuantizedWeight:
    """[output_size, input_size] float -> unsigned `bits`-bit codes per group of `group_size`
    input features (-1: one group per output feature), each within half a step of the weight.

    Symmetric: zero point 2**(bits-1), scale = absmax / (2**(bits-1) - 1). Asymmetric: the
    group's range [min(w, 0), max(w, 0)] over 2**bits - 1 steps, zero point rounded."""
    if weight.dim() != 2 or not weight.is_floating_point():
        raise ValueError(f"expected a 2-D float weight, got {weight.dim()}-D {weight.dtype}")
    if not 2 <= bits <= 8:
        raise ValueError(f"round-to-nearest takes 2 to 8 bits, got {bits}")
    if not bool(torch.isfinite(weight).all()):
        raise ValueError("the weight holds inf or NaN; it cannot be quantized")
    output_size, input_size = weight.shape
    group_size = input_size if group_size == -1 else group_size
    if group_size <= 0 or input_size % group_size:
        raise ValueError(f"input size {input_size} is not divisible by group size {group_size}")
    groups = weight.float().view(output_size, -1, group_size)  # [out, num_groups, group_size]
    max_q = 2**bits - 1
    if sym:
        scales = groups.abs().amax(-1) / (2 ** (bits - 1) - 1)  # [out, num_groups]
        zeros = torch.full_like(scales, 2 ** (bits - 1))
    else:
        low = groups.amin(-1).clamp(max=0)
        scales = (groups.amax(-1).clamp(min=0) - low) / max_q
        zeros = torch.round(-low / torch.where(scales == 0, 1.0, scales))
    safe = torch.where(scales == 0, 1.0, scales)  # an all-zero group: q = zero point, w = 0
    q = (torch.round(groups / safe.unsqueeze(-1)) + zeros.unsqueeze(-1)).clamp(0, max_q)
    return QuantizedWeight(
        q.view(output_size, input_size).int(),
        scales.t().contiguous(),
        zeros.t().int().contiguous(),
        bits,
        group_size,
    )


def quantize_per_channel_int8(weight: torch.Tensor) -> QuantizedWeight:
    """Symmetric int8, one float32 scale (absmax / 127) per output feature, zero point 128."""
    return quantize_rtn(weight, 8, -1, sym=True)


class Int8OnTheFlyLinearMethod:
    """A dense weight quantized at load time to symmetric per-channel int8 (`Int8LinearMethod`)."""

    def __init__(self, kernel_dtype: torch.dtype | None = None) -> None:
        self.int8 = Int8LinearMethod(None, symmetric=True, kernel_dtype=kernel_dtype)

    def create_weights(
        self, layer: nn.Module, input_size: int, output_size: int, dtype: torch.dtype
    ) -> None:
        self.int8.create_weights(layer, input_size, output_size, dtype)

    def load_dense(self, layer: nn.Module, weight: torch.Tensor) -> None:
        """Quantize `weight` [output_size, input_size] into the parameters create_weights made."""
        _, output_size, input_size = layer.qweight.shape
        if tuple(weight.shape) != (output_size, input_size):
            raise ValueError(
                f"expected a weight of shape {[output_size, input_size]}, got {list(weight.shape)}"
            )
        self.int8.load_weight(layer, quantize_per_channel_int8(weight.to(layer.qweight.device)))

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return self.int8.apply(layer, x, bias)
