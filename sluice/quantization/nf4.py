"""bitsandbytes' 4-bit float formats (TGI's `bitsandbytes-nf4` / `bitsandbytes-fp4`), on the fly.

Terms: a *codebook* maps each 4-bit *code* to a value in [-1, 1]; a *block* is 64 consecutive
weights of one output row (bitsandbytes' default blocksize) with one float32 *absmax*, and
w = codebook[code] * absmax. Codes are packed two per byte, the first weight in the high nibble,
as bitsandbytes packs them: with `compress_statistics=False` our `qweight` and `absmax` hold the
bytes its `quantize_4bit(w, blocksize=64)` returns (TGI turns on its double quantization of
absmax, which we skip: 0.5625 rather than ~0.52 byte per weight). Refuses what it cannot hold."""

from typing import Final, Literal

import torch
from torch import nn

from sluice.quantization.chunked_linear import chunked_linear

BLOCK_SIZE: Final = 64
QUANTIZE_CHUNK_WEIGHTS: Final = 2**22

# bitsandbytes-foundation/bitsandbytes, bitsandbytes/functional.py, get_4bit_type("nf4")
# (commit 01327aa0): quantiles of N(0, 1) scaled into [-1, 1], 7 negative, 0, 8 positive.
NF4_CODEBOOK: Final = (
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
)
# Same function, "fp4": sign bit, then bitsandbytes' own order of 2 exponent bits and 1 mantissa
# bit (0b010 is 8, 0b100 is 4, 0b001 the subnormal 0.0625), divided in float32 by the max, 12.
FP4_UNSCALED: Final = (0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0)
FP4_SIGN_BIT: Final = 8

Kind = Literal["nf4", "fp4"]


def codebook(kind: Kind) -> torch.Tensor:
    """[16] float32: the value of each code."""
    if kind == "nf4":
        return torch.tensor(NF4_CODEBOOK, dtype=torch.float32)
    if kind == "fp4":
        positive = torch.tensor(FP4_UNSCALED, dtype=torch.float32) / 12.0
        return torch.cat((positive, -positive))
    raise ValueError(f"4-bit float kind must be 'nf4' or 'fp4', got {kind!r}")


def quantize_4bit(weight: torch.Tensor, kind: Kind) -> tuple[torch.Tensor, torch.Tensor]:
    """[output_size, input_size] float -> (packed uint8 [output_size, input_size / 2],
    absmax float32 [output_size, input_size / 64]); each weight gets its nearest code."""
    output_size, input_size = _check_dense(weight)
    packed = torch.empty(output_size, input_size // 2, dtype=torch.uint8, device=weight.device)
    absmax = torch.empty(output_size, input_size // BLOCK_SIZE, device=weight.device)
    # A few rows at a time: the float32 and int64 temporaries are 12 bytes per weight.
    chunk_rows = max(1, QUANTIZE_CHUNK_WEIGHTS // input_size)
    for start in range(0, output_size, chunk_rows):
        rows = weight[start : start + chunk_rows].float()
        blocks = rows.view(rows.shape[0], -1, BLOCK_SIZE)  # [rows, num_blocks, BLOCK_SIZE]
        block_max = blocks.abs().amax(dim=-1)
        normalized = blocks / torch.where(block_max == 0, 1.0, block_max).unsqueeze(-1)
        codes = _nearest_codes(normalized, kind).view(rows.shape[0], -1, 2)
        packed[start : start + chunk_rows] = (codes[..., 0] << 4) | codes[..., 1]
        absmax[start : start + chunk_rows] = block_max
    return packed, absmax


def dequantize_4bit(packed: torch.Tensor, absmax: torch.Tensor, kind: Kind) -> torch.Tensor:
    """The inverse of `quantize_4bit`, in float32: [output_size, input_size]."""
    codes = torch.stack((packed >> 4, packed & 0xF), dim=-1).long()  # [out, in / 2, 2]
    values = codebook(kind).to(packed.device)[codes].view(absmax.shape[0], -1, BLOCK_SIZE)
    return (values * absmax.unsqueeze(-1)).view(absmax.shape[0], -1)


class Nf4LinearMethod:
    """A dense weight quantized at load time to NF4 or FP4, blocks of 64, fp32 absmax.

    No torch kernel multiplies these codes, so `apply` dequantizes the weight into the
    activation's dtype a few rows at a time (`chunked_linear`) and runs the dense kernel on each
    chunk: every call rebuilds the whole weight, several times the dense layer's work at one
    token. That is why TGI's own rule of thumb says bitsandbytes NF4 saves memory but runs
    slower than fp16 (and than int8/int4 kernels): use it when the model would not fit
    otherwise. The fastest exact expansion measured: one gather per byte from a 256-entry
    table of code pairs (`index_select`, ~4x faster than indexing a 16-entry codebook per
    nibble), then one multiply by the block's absmax."""

    def __init__(self, kind: Kind) -> None:
        self.codebook = codebook(kind)  # validates kind
        self.kind = kind

    def create_weights(
        self, layer: nn.Module, input_size: int, output_size: int, dtype: torch.dtype
    ) -> None:
        if input_size % BLOCK_SIZE:
            raise ValueError(
                f"{self.kind} needs an input size divisible by its block size {BLOCK_SIZE}, "
                f"got {input_size}"
            )
        layer.qweight = nn.Parameter(
            torch.empty(output_size, input_size // 2, dtype=torch.uint8), False
        )
        layer.absmax = nn.Parameter(
            torch.empty(output_size, input_size // BLOCK_SIZE, dtype=torch.float32), False
        )

    def load_dense(self, layer: nn.Module, weight: torch.Tensor) -> None:
        """Quantize `weight` [output_size, input_size] into the parameters create_weights made."""
        expected = (layer.qweight.shape[0], layer.qweight.shape[1] * 2)
        if tuple(weight.shape) != expected:
            raise ValueError(
                f"expected a weight of shape {list(expected)}, got {list(weight.shape)}"
            )
        packed, absmax = quantize_4bit(weight.to(layer.qweight.device), self.kind)
        layer.qweight.data.copy_(packed)
        layer.absmax.data.copy_(absmax)

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        output_size, packed_input = layer.qweight.shape
        if x.shape[-1] != packed_input * 2:
            raise ValueError(f"expected {packed_input * 2} input features, got {x.shape[-1]}")
        pair_table = _pair_table(self.codebook.to(x.device), x.dtype)

        def dequantize(start: int, end: int, dtype: torch.dtype) -> torch.Tensor:
            codes = layer.qweight[start:end].reshape(-1).int()
            values = pair_table.index_select(0, codes).view(dtype)  # [rows * input_size]
            blocks = values.view(end - start, -1, BLOCK_SIZE)
            scaled = blocks * layer.absmax[start:end].to(dtype).unsqueeze(-1)
            return scaled.view(end - start, -1)

        return chunked_linear(x, output_size, dequantize, bias)


_PAIR_INT_DTYPES: Final = {2: torch.int32, 4: torch.int64}


def _pair_table(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[256] ints, each the two values (high nibble's first) of a byte in `dtype`, side by side."""
    if dtype.itemsize not in _PAIR_INT_DTYPES or not dtype.is_floating_point:
        raise ValueError(f"4-bit float layers compute in bf16, fp16 or fp32, not {dtype}")
    byte = torch.arange(256, device=values.device)
    pairs = torch.stack((values[byte >> 4], values[byte & 0xF]), dim=-1).to(dtype)  # [256, 2]
    return pairs.view(_PAIR_INT_DTYPES[dtype.itemsize]).view(256)


def _nearest_codes(normalized: torch.Tensor, kind: Kind) -> torch.Tensor:
    """Values in [-1, 1] -> int64 codes. A value halfway between two codes takes the lower
    one (for FP4: the smaller magnitude), as bitsandbytes' `x > midpoint` decision trees do."""
    if kind == "nf4":  # the codebook is ascending: code i is the i-th value
        ascending = torch.tensor(NF4_CODEBOOK, dtype=torch.float32, device=normalized.device)
        return torch.bucketize(normalized, (ascending[1:] + ascending[:-1]) / 2)
    magnitudes = torch.tensor(FP4_UNSCALED, dtype=torch.float32, device=normalized.device) / 12.0
    order = torch.argsort(magnitudes)
    ascending = magnitudes[order]
    midpoints = (ascending[1:] + ascending[:-1]) / 2
    codes = order.to(normalized.device)[torch.bucketize(normalized.abs(), midpoints)]
    return torch.where(normalized < 0, codes | FP4_SIGN_BIT, codes)


def _check_dense(weight: torch.Tensor) -> tuple[int, int]:
    if weight.dim() != 2 or not weight.is_floating_point():
        raise ValueError(f"expected a 2-D float weight, got {weight.dim()}-D {weight.dtype}")
    output_size, input_size = weight.shape
    if input_size % BLOCK_SIZE:
        raise ValueError(
            f"4-bit float blocks need an input size divisible by {BLOCK_SIZE}, got {input_size}"
        )
    if not bool(torch.isfinite(weight).all()):
        raise ValueError("the weight holds inf or NaN; it cannot be quantized")
    return output_size, input_size
