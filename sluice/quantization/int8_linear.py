"""int8 weight-only linear on torch's `_weight_int8pack_mm` (one scale per output feature).

The kernel computes (x @ w.T) * scale with w int8 [output_size, input_size]. A checkpoint's
unsigned q with zero point z is stored as w = q - 128, exact in int8; the remainder,
-(z - 128) * s, is the same for every input of a group, so it adds -(sum of the group's inputs) *
(z - 128) * s: one small [tokens, num_groups] @ [num_groups, output_size] matmul in float32,
skipped for symmetric weights (z = 128). Groups narrower than the input run one kernel call per
group, summed in float32: exact but slower; per channel is the fast path. A short last group
(AutoGPTQ's, where the group size does not divide the input) is run as calls over groups of
gcd(group size, input size) features, each with its group's scales. In torch 2.13 the
kernel reads out of bounds with bf16 activations when the input size is not a multiple of 16
(wrong results or a crash), so such groups are refused. The CPU kernel is vectorised for bf16
activations only; with float32 (or float16) ones the layer multiplies by its weight dequantized
a chunk of output rows at a time instead (`chunked_linear`)."""

import functools
import math

import torch
from torch import nn

from sluice.quantization.chunked_linear import chunked_linear
from sluice.quantization.input_perm import create_input_perm, load_input_perm, permute_input
from sluice.quantization.quantized_weight import QuantizedWeight

ZERO_POINT = 128
INPUT_MULTIPLE = 16


class Int8LinearMethod:
    """8-bit weights, scales per output feature (or per group); `group_size` None: per channel."""

    def __init__(
        self,
        group_size: int | None,
        *,
        symmetric: bool,
        has_input_perm: bool = False,
        kernel_dtype: torch.dtype | None = None,
    ) -> None:
        self.group_size = group_size
        self.symmetric = symmetric
        self.has_input_perm = has_input_perm
        self.kernel_dtype = kernel_dtype
        """The activations' dtype inside the kernel (None: the model's); see `kernel_dtype`."""

    def create_weights(
        self, layer: nn.Module, input_size: int, output_size: int, dtype: torch.dtype
    ) -> None:
        group_size = self._kernel_group_size(input_size)
        num_groups = input_size // group_size
        layer.qweight = nn.Parameter(
            torch.empty(num_groups, output_size, group_size, dtype=torch.int8), False
        )
        scales_dtype = self.kernel_dtype or dtype
        layer.scales = nn.Parameter(torch.empty(num_groups, output_size, dtype=scales_dtype), False)
        if not self.symmetric:
            # float32: it is subtracted from the kernel's output, so its error would add up.
            layer.zero_offsets = nn.Parameter(
                torch.empty(num_groups, output_size, dtype=torch.float32), False
            )
        if self.has_input_perm:
            create_input_perm(layer, input_size)

    def load_weight(self, layer: nn.Module, weight: QuantizedWeight) -> None:
        """Convert `weight` into the parameters `create_weights` made."""
        num_groups, output_size, group_size = layer.qweight.shape
        input_size = num_groups * group_size
        if weight.bits != 8 or tuple(weight.q.shape) != (output_size, input_size):
            raise ValueError(
                f"expected an 8-bit {[output_size, input_size]} weight, got a {weight.bits}-bit "
                f"{list(weight.q.shape)} one"
            )
        expected_group_size = input_size if self.group_size is None else self.group_size
        if weight.group_size != expected_group_size:
            raise ValueError(
                f"weight has group size {weight.group_size}, layer {expected_group_size}"
            )
        is_symmetric = bool((weight.zeros == ZERO_POINT).all())
        if self.symmetric and not is_symmetric:
            raise ValueError(f"symmetric int8 weights need every zero point at {ZERO_POINT}")
        load_input_perm(layer, weight, self.has_input_perm)
        device = layer.qweight.device
        signed = (weight.q.to(device, torch.int32) - ZERO_POINT).to(torch.int8)
        layer.qweight.data.copy_(signed.view(output_size, num_groups, group_size).transpose(0, 1))
        # The checkpoint's group of each kernel group: a repeat, or the short last group.
        checkpoint_group = torch.arange(0, input_size, group_size) // weight.group_size
        scales = weight.scales.to(device)[checkpoint_group]
        layer.scales.data.copy_(scales)
        if not self.symmetric:
            zeros = weight.zeros.to(device, torch.float32)[checkpoint_group] - ZERO_POINT
            layer.zero_offsets.data.copy_(zeros * scales.float())

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        num_groups, output_size, group_size = layer.qweight.shape
        rows = x.reshape(-1, num_groups * group_size)  # [num_tokens, input_size]
        if self.has_input_perm:
            rows = permute_input(layer, rows)
        if layer.scales.dtype != torch.bfloat16 and rows.device.type == "cpu":
            # The CPU kernel is vectorised for bf16 activations only; with others it runs 8-54x
            # slower, from 16 tokens on, than a dense matmul on the weight dequantized a chunk at
            # a time (bench/results/quantized_kernel_dtype.md).
            dequantize = functools.partial(_dequantize, layer)
            out = chunked_linear(rows, output_size, dequantize, bias)
            return out.view(*x.shape[:-1], output_size)
        rows = rows.to(layer.scales.dtype)  # the kernel wants its scales' dtype
        if num_groups == 1:
            out = torch.ops.aten._weight_int8pack_mm(
                rows.contiguous(), layer.qweight[0], layer.scales[0]
            )
        else:
            out = rows.new_zeros(rows.shape[0], output_size, dtype=torch.float32)
            for group, start in enumerate(range(0, rows.shape[1], group_size)):
                piece = rows[:, start : start + group_size].contiguous()
                part = torch.ops.aten._weight_int8pack_mm(
                    piece, layer.qweight[group], layer.scales[group]
                )
                out += part
        if not self.symmetric:
            group_sums = rows.float().view(rows.shape[0], num_groups, group_size).sum(-1)
            out = out.float() - group_sums @ layer.zero_offsets
        out = out.to(x.dtype)
        if bias is not None:
            out = out + bias
        return out.view(*x.shape[:-1], output_size)

    def _kernel_group_size(self, input_size: int) -> int:
        """The input features of one kernel call: every group, the last one included, is a
        whole number of them."""
        group_size = input_size if self.group_size is None else self.group_size
        kernel_group_size = math.gcd(group_size, input_size)
        if not 0 < group_size <= input_size or kernel_group_size % INPUT_MULTIPLE:
            raise ValueError(
                f"int8 kernels need groups and inputs of a multiple of {INPUT_MULTIPLE} input "
                f"features; got group size {group_size} for input size {input_size}"
            )
        return kernel_group_size


def _dequantize(layer: nn.Module, start: int, end: int, dtype: torch.dtype) -> torch.Tensor:
    """Output rows [start, end) of the weight: q * scale - zero offset, in float32 (as the
    kernel and its zero-point correction compute them), then in `dtype`."""
    weight = layer.qweight[:, start:end].float()  # [groups, rows, group_size]
    weight.mul_(layer.scales[:, start:end, None].float())
    if hasattr(layer, "zero_offsets"):
        weight.sub_(layer.zero_offsets[:, start:end, None])
    return weight.transpose(0, 1).reshape(end - start, -1).to(dtype)
