"""Shared checks for methods that quantize a dense weight at load time (`load_dense`)."""

import torch
from torch import nn

# bf16 rounds each weight's factors and product (up to 3 x 2**-9 relative) and the output
# (2**-9): under 2**-7 of |x| @ |w|.T; the bound doubles it. A wrong layout is off by ~1.
BF16_BOUND = 2**-6
FP32_BOUND = 2**-16


def make_layer(method: object, weight: torch.Tensor, dtype: torch.dtype) -> nn.Module:
    layer = nn.Module()
    output_size, input_size = weight.shape
    method.create_weights(layer, input_size, output_size, dtype)  # type: ignore[attr-defined]
    method.load_dense(layer, weight)  # type: ignore[attr-defined]
    return layer


def assert_close_to_dequantized(
    out: torch.Tensor, x: torch.Tensor, dequantized: torch.Tensor, *, relative: float
) -> None:
    """out within `relative` * (|x| @ |dequantized|.T) of x @ dequantized.T, elementwise."""
    x64 = x.double().reshape(-1, x.shape[-1])
    w64 = dequantized.double()
    expected = x64 @ w64.t()
    bound = relative * (x64.abs() @ w64.abs().t()) + 1e-30
    error = (out.double().reshape(expected.shape) - expected).abs()
    worst = (error / bound).max().item()
    assert worst <= 1.0, f"error reaches {worst:.2f}x the bound"


def bytes_per_weight(layer: nn.Module, num_weights: int) -> float:
    return sum(p.numel() * p.element_size() for p in layer.parameters()) / num_weights
