"""int4 weight-only linear on torch's CPU kernel (`_weight_int4pack_mm_for_cpu`, tinygemm-style).

The kernel dequantizes one block of the packed weight at a time while it multiplies, as
w = (q - 8) * scale + zero in float32 with bfloat16 (or the activation's dtype) scales and zeros,
so a checkpoint's (q - z) * s becomes scale = s, zero = (8 - z) * s. It takes groups of 32, 64,
128 or 256 input features only, all alike; other multiples of 32, per-channel included, and a
short last group (AutoGPTQ's, where the group size does not divide the input) repeat each scale
over several kernel groups of a size dividing both, which is exact. Layout: `qweight` uint8
[output_size, input_size / 2] (torch's own packing), `scales_and_zeros` [num_kernel_groups,
output_size, 2]. The kernel is vectorised for bfloat16 activations only; with float32 (or
float16) ones the layer instead unpacks the weight a chunk of output rows at a time and runs a
dense matmul (`chunked_linear`), the same weights at 7-58x the kernel's speed from 16 tokens on.
CUDA (`_weight_int4pack_mm`, another packing) is not supported yet: refused, not guessed."""

import functools

import torch
from torch import nn

from sluice.quantization.chunked_linear import chunked_linear
from sluice.quantization.input_perm import create_input_perm, load_input_perm, permute_input
from sluice.quantization.int4_unpacking import PackedLayout, cpu_packed_layout
from sluice.quantization.quantized_weight import QuantizedWeight

KERNEL_GROUP_SIZES = (256, 128, 64, 32)
# The kernel works on blocks of 16 output features; padding would cost a copy per call.
OUTPUT_MULTIPLE = 16


class Int4LinearMethod:
    """4-bit weights, per-group scales and zero points; `group_size` None means per channel."""

    def __init__(
        self,
        group_size: int | None,
        *,
        has_input_perm: bool = False,
        kernel_dtype: torch.dtype | None = None,
    ) -> None:
        self.group_size = group_size
        self.has_input_perm = has_input_perm
        self.kernel_dtype = kernel_dtype
        """The activations' dtype inside the kernel (None: the model's); see `kernel_dtype`."""

    def create_weights(
        self, layer: nn.Module, input_size: int, output_size: int, dtype: torch.dtype
    ) -> None:
        device = torch.get_default_device()
        if device.type != "cpu":
            raise ValueError(f"int4 weights run on CPU only for now, not on {device.type}")
        group_size = self._resolve_group_size(input_size)
        if output_size % OUTPUT_MULTIPLE:
            raise ValueError(
                f"int4 kernels need an output size divisible by {OUTPUT_MULTIPLE}, "
                f"got {output_size}"
            )
        num_kernel_groups = input_size // _kernel_group_size(group_size, input_size)
        layer.qweight = nn.Parameter(
            torch.empty(output_size, input_size // 2, dtype=torch.uint8), False
        )
        layer.scales_and_zeros = nn.Parameter(
            torch.empty(num_kernel_groups, output_size, 2, dtype=self.kernel_dtype or dtype), False
        )
        if self.has_input_perm:
            create_input_perm(layer, input_size)

    def load_weight(self, layer: nn.Module, weight: QuantizedWeight) -> None:
        """Pack `weight` into the parameters `create_weights` made."""
        output_size, packed_input = layer.qweight.shape
        input_size = packed_input * 2
        if weight.bits != 4 or weight.q.shape != (output_size, input_size):
            raise ValueError(
                f"expected a 4-bit [{output_size}, {input_size}] weight, got a {weight.bits}-bit "
                f"{list(weight.q.shape)} one"
            )
        if weight.group_size != self._resolve_group_size(input_size):
            raise ValueError(f"weight has group size {weight.group_size}, layer {self.group_size}")
        load_input_perm(layer, weight, self.has_input_perm)
        # The CPU packer ignores its inner-k-tiles argument (a CUDA layout knob).
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
            weight.q.to(device=layer.qweight.device, dtype=torch.int32).contiguous(), 1
        )
        layer.qweight.data.copy_(packed)
        scales = weight.scales.to(layer.qweight.device, torch.float32)
        zeros = (8 - weight.zeros.to(layer.qweight.device, torch.float32)) * scales
        kernel_group_size = _kernel_group_size(weight.group_size, input_size)
        kernel_group_starts = torch.arange(0, input_size, kernel_group_size)
        group_of_kernel_group = kernel_group_starts.to(scales.device) // weight.group_size
        scales_and_zeros = torch.stack((scales, zeros), dim=-1)[group_of_kernel_group]
        layer.scales_and_zeros.data.copy_(scales_and_zeros)

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        output_size, packed_input = layer.qweight.shape
        input_size = packed_input * 2
        rows = x.reshape(-1, input_size)  # [num_tokens, input_size]
        if self.has_input_perm:
            rows = permute_input(layer, rows)
        kernel_dtype = layer.scales_and_zeros.dtype
        if kernel_dtype != torch.bfloat16 and (layout := cpu_packed_layout()) is not None:
            # The kernel is vectorised for bf16 activations only; with others it runs 7-58x
            # slower, from 16 tokens on, than a dense matmul on the weight dequantized a chunk at
            # a time (bench/results/quantized_kernel_dtype.md).
            dequantize = functools.partial(_dequantize, layer, layout)
            out = chunked_linear(
                rows, output_size, dequantize, bias, row_multiple=layout.block_size
            )
            return out.view(*x.shape[:-1], output_size)
        # The kernel wants activations in the dtype of its scales (bf16, fp16 and fp32 all work).
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(
            rows.to(kernel_dtype).contiguous(),
            layer.qweight,
            input_size // layer.scales_and_zeros.shape[0],
            layer.scales_and_zeros,
        ).to(x.dtype)
        if bias is not None:
            out = out + bias
        return out.view(*x.shape[:-1], output_size)

    def _resolve_group_size(self, input_size: int) -> int:
        group_size = input_size if self.group_size is None else self.group_size
        if not 0 < group_size <= input_size or group_size % 32 or input_size % 32:
            raise ValueError(
                f"int4 kernels need groups and inputs of a multiple of 32 input features; got "
                f"group size {group_size} for input size {input_size}"
            )
        return group_size


def _dequantize(
    layer: nn.Module, layout: PackedLayout, start: int, end: int, dtype: torch.dtype
) -> torch.Tensor:
    """Output rows [start, end) of the weight, as the kernel computes them: (q - 8) * scale +
    zero, in float32, then in `dtype`."""
    codes = layout.unpack(layer.qweight, start, end)  # [rows, input_size]
    scales_and_zeros = layer.scales_and_zeros[:, start:end].float().transpose(0, 1)
    num_rows, num_groups = end - start, scales_and_zeros.shape[1]
    weight = codes.view(num_rows, num_groups, -1).float() - 8  # [rows, groups, group_size]
    weight.mul_(scales_and_zeros[..., :1]).add_(scales_and_zeros[..., 1:])
    return weight.view(num_rows, -1).to(dtype)


def _kernel_group_size(group_size: int, input_size: int) -> int:
    """The largest size the kernel takes that divides every group, the last one included."""
    return next(
        size for size in KERNEL_GROUP_SIZES if group_size % size == 0 and input_size % size == 0
    )
