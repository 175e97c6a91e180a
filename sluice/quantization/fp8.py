"""Weight-only float8 (TGI's `fp8`) on the fly: e4m3 weights, one float32 scale per output row.

w = qweight * scale with qweight `torch.float8_e4m3fn` [output_size, input_size] and scale =
the row's absmax / 448 (e4m3's largest value). `torch._scaled_mm` does run on CPU in torch 2.13,
but on SmolLM2 shapes (one core) it took 1.7-2.6 ms against ~0.4-0.7 ms for the upcast below,
and rounding activations to fp8 per token put its output ~3% (of the largest output) away from x @
dequantized.T, against ~0.5% for bf16 rounding; so activations stay in their dtype and each call
upcasts the weight a chunk at a time (`chunked_linear`)."""

from typing import Final

import torch
from torch import nn

from sluice.quantization.chunked_linear import chunked_linear

FP8_MAX: Final = 448.0
# An e4m3 byte s.eeee.mmm, moved into bfloat16's bit positions (sign 15, exponent 14..7,
# mantissa 6..0) as s.0000eeee.mmm0000, reads as its value times 2**-120 (exponent bias 127
# against 7), subnormals included; multiplying by 2**120 is exact. Four integer passes run
# about ten times faster than torch's own float8 -> bfloat16 conversion (measured on a Zen 4
# CPU for a 576 x 1536 weight). Wrong if denormals are flushed (torch.set_flush_denormal(True)).
BF16_RESCALE: Final = 2.0**120
SIGN_AND_LOW_BITS: Final = -30721  # int16 0x87FF: bit 15 and bits 10..0


def quantize_fp8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[output_size, input_size] float -> (float8_e4m3fn of the same shape, float32 scales
    [output_size]); every weight rounds to its nearest e4m3 step of the row's scale."""
    if weight.dim() != 2 or not weight.is_floating_point():
        raise ValueError(f"expected a 2-D float weight, got {weight.dim()}-D {weight.dtype}")
    if not bool(torch.isfinite(weight).all()):
        raise ValueError("the weight holds inf or NaN; it cannot be quantized")
    rows = weight.float()
    scales = rows.abs().amax(dim=1) / FP8_MAX
    safe = torch.where(scales == 0, 1.0, scales).unsqueeze(1)
    # Clamped: e4m3fn has no infinity, so a value rounding past 448 would become NaN.
    q = (rows / safe).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q, scales


def upcast_fp8(q: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """float8_e4m3fn -> `dtype` (bf16, fp16 or fp32), exactly, by moving bits (see BF16_RESCALE)."""
    bits = (q.view(torch.int8).to(torch.int16) << 4) & SIGN_AND_LOW_BITS  # sign-extended byte
    return (bits.view(torch.bfloat16) * BF16_RESCALE).to(dtype)


class Fp8LinearMethod:
    """A dense weight quantized at load time to e4m3 with per-output-row scales; weight-only."""

    def create_weights(
        self, layer: nn.Module, input_size: int, output_size: int, dtype: torch.dtype
    ) -> None:
        layer.qweight = nn.Parameter(
            torch.empty(output_size, input_size, dtype=torch.float8_e4m3fn), False
        )
        layer.weight_scale = nn.Parameter(torch.empty(output_size, dtype=torch.float32), False)

    def load_dense(self, layer: nn.Module, weight: torch.Tensor) -> None:
        """Quantize `weight` [output_size, input_size] into the parameters create_weights made."""
        if tuple(weight.shape) != tuple(layer.qweight.shape):
            raise ValueError(
                f"expected a weight of shape {list(layer.qweight.shape)}, got {list(weight.shape)}"
            )
        q, scales = quantize_fp8(weight.to(layer.qweight.device))
        layer.qweight.data.copy_(q)
        layer.weight_scale.data.copy_(scales)

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        output_size, input_size = layer.qweight.shape
        if x.shape[-1] != input_size:
            raise ValueError(f"expected {input_size} input features, got {x.shape[-1]}")

        def dequantize(start: int, end: int, dtype: torch.dtype) -> torch.Tensor:
            values = upcast_fp8(layer.qweight[start:end], dtype)
            return values * layer.weight_scale[start:end].to(dtype).unsqueeze(1)

        return chunked_linear(x, output_size, dequantize, bias)
