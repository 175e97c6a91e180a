"""Reference quantizer, checkpoint packers and error bound for the quantization tests.

Written from the formats' descriptions, independently of `sluice.quantization`: packers build
words by shifting left and summing, where the code under test shifts right and masks."""

from dataclasses import dataclass

import torch

# Slot j of an AWQ word holds column 8c + AWQ_PACK_ORDER[j] (AutoAWQ's order_map).
AWQ_PACK_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


@dataclass(frozen=True)
class Reference:
    """A hand-quantized weight: w[n, k] = (q[n, k] - zeros[g_idx[k], n]) * scales[g_idx[k], n]."""

    q: torch.Tensor  # [output_size, input_size] int32
    scales: torch.Tensor  # [num_groups, output_size] fp16
    zeros: torch.Tensor  # [num_groups, output_size] int32
    g_idx: torch.Tensor  # [input_size] int64
    bits: int

    def dequantize(self) -> torch.Tensor:
        """[output_size, input_size] float64."""
        z = self.zeros[self.g_idx].t().double()
        s = self.scales[self.g_idx].t().double()
        return (self.q.double() - z) * s

    def magnitude(self, center: int) -> torch.Tensor:
        """s * (|q - center| + |z - center|): what the kernels' rounding errors scale with."""
        z = self.zeros[self.g_idx].t().double()
        s = self.scales[self.g_idx].t().double()
        return s * ((self.q.double() - center).abs() + (z - center).abs())


def quantize(
    output_size: int,
    input_size: int,
    *,
    bits: int,
    group_size: int,
    symmetric: bool,
    act_order: bool = False,
    seed: int = 0,
) -> Reference:
    """Quantize a random float weight min/max style, groups chosen as GPTQ would.

    With `act_order`, a random permutation stands in for GPTQ's Hessian order."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(output_size, input_size, generator=generator, dtype=torch.float64)
    order = torch.randperm(input_size, generator=generator) if act_order else None
    return quantize_weight(
        weight, bits=bits, group_size=group_size, symmetric=symmetric, order=order
    )


def quantize_weight(
    weight: torch.Tensor,
    *,
    bits: int,
    group_size: int,
    symmetric: bool,
    order: torch.Tensor | None = None,
) -> Reference:
    """Quantize `weight` [output_size, input_size] min/max style; `order` is the order in
    which GPTQ would visit the input features (act-order), None for input order."""
    weight = weight.double()
    output_size, input_size = weight.shape
    position = torch.arange(input_size)
    if order is not None:  # feature order[i] is the i-th quantized, so it joins group i // size
        position = torch.empty_like(position).scatter_(0, order, torch.arange(input_size))
    g_idx = position // group_size
    num_groups = -(-input_size // group_size)  # AutoGPTQ: the last group may be short
    max_q = 2**bits - 1
    scales = torch.empty(num_groups, output_size, dtype=torch.float64)
    zeros = torch.empty(num_groups, output_size, dtype=torch.int64)
    for group in range(num_groups):
        members = weight[:, g_idx == group]
        low, high = members.amin(1).clamp(max=0), members.amax(1).clamp(min=0)
        if symmetric:
            high = torch.maximum(high, -low)
            low = -high
        scales[group] = (high - low) / max_q
        zeros[group] = 2 ** (bits - 1) if symmetric else torch.round(-low / scales[group]).long()
    scales = scales.half()
    s, z = scales[g_idx].t().double(), zeros[g_idx].t()
    q = (torch.round(weight / s) + z).clamp(0, max_q).int()
    return Reference(q, scales, zeros.int(), g_idx, bits)


def _to_int32(words: torch.Tensor) -> torch.Tensor:
    """int64 words in [0, 2**32) -> the int32 with the same bits."""
    return torch.where(words >= 2**31, words - 2**32, words).int()


def pack_rows(values: torch.Tensor, bits: int) -> torch.Tensor:
    """[rows, cols] -> [rows / p, cols] int32, row r * p + j in bits j * bits and up."""
    per_word = 32 // bits
    shifts = (torch.arange(per_word, dtype=torch.int64) * bits).view(1, -1, 1)
    grouped = values.long().view(-1, per_word, values.shape[1])
    return _to_int32((grouped << shifts).sum(1))


def pack_columns(
    values: torch.Tensor, bits: int, order: tuple[int, ...] | None = None
) -> torch.Tensor:
    """[rows, cols] -> [rows, cols / p] int32; slot j of word c holds column c * p + order[j]."""
    per_word = 32 // bits
    order = order or tuple(range(per_word))
    words = torch.zeros(values.shape[0], values.shape[1] // per_word, dtype=torch.int64)
    for slot, column in enumerate(order):
        words += values[:, column::per_word].long() << (slot * bits)
    return _to_int32(words)


def pack_gptq(ref: Reference, *, v1: bool) -> dict[str, torch.Tensor]:
    """The four tensors AutoGPTQ (v1: zeros stored minus one) or GPTQModel (v2) writes."""
    zeros = (ref.zeros - 1) & (2**ref.bits - 1) if v1 else ref.zeros
    return {
        "qweight": pack_rows(ref.q.t(), ref.bits),
        "qzeros": pack_columns(zeros, ref.bits),
        "scales": ref.scales,
        "g_idx": ref.g_idx.int(),
    }


def pack_awq(ref: Reference) -> dict[str, torch.Tensor]:
    return {
        "qweight": pack_columns(ref.q.t(), 4, AWQ_PACK_ORDER),
        "qzeros": pack_columns(ref.zeros, 4, AWQ_PACK_ORDER),
        "scales": ref.scales,
    }


def assert_matches(
    out: torch.Tensor, x: torch.Tensor, ref: Reference, *, center: int, relative: float
) -> None:
    """out must be within `relative` * (|x| @ magnitude.T) of x @ dequantized.T, elementwise.

    bf16 keeps 8 significant bits, so scales, zero terms and each output are rounded by up to
    2**-9 relative, and error stays below 2**-8 * |x| @ (s * (|q - c| + |z - c|)).T. A wrong
    layout is off by about |x| @ |w|.T, hundreds of times more."""
    x64 = x.double().reshape(-1, x.shape[-1])
    expected = x64 @ ref.dequantize().t()
    bound = relative * (x64.abs() @ ref.magnitude(center).t()) + 1e-30
    error = (out.double().reshape(expected.shape) - expected).abs()
    worst = (error / bound).max().item()
    assert worst <= 1.0, f"error reaches {worst:.2f}x the bound"
