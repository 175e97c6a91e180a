import pytest
import torch

import sluice.quantization.chunked_linear as chunked_linear
from sluice.quantization.nf4 import Nf4LinearMethod, codebook, dequantize_4bit, quantize_4bit
from tests.unit.quantization.dense_reference import (
    BF16_BOUND,
    FP32_BOUND,
    assert_close_to_dequantized,
    bytes_per_weight,
    make_layer,
)

# Copied from bitsandbytes-foundation/bitsandbytes, bitsandbytes/functional.py, get_4bit_type
# (commit 01327aa0), which returns Tensor(data) / data.abs().max() in float32.
BNB_NF4 = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]  # fmt: skip
BNB_FP4 = [
    0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0, -0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0, -3.0,
]  # fmt: skip
KINDS = ["nf4", "fp4"]


def _bnb_codebook(kind: str) -> torch.Tensor:
    data = torch.tensor(BNB_NF4 if kind == "nf4" else BNB_FP4, dtype=torch.float32)
    return data / data.abs().max()


@pytest.mark.parametrize("kind", KINDS)
def test_codebook_matches_bitsandbytes(kind):
    assert torch.equal(codebook(kind), _bnb_codebook(kind))


def test_fp4_codebook_bit_meanings():
    values = codebook("fp4") * 12
    assert values[0b0011] == 12 and values[0b0010] == 8 and values[0b0001] == 0.0625
    assert torch.equal(values[8:], -values[:8])


@pytest.mark.parametrize("kind", KINDS)
def test_4bit_picks_nearest_code_and_keeps_absmax(kind):
    weight = torch.randn(8, 256, generator=torch.Generator().manual_seed(0))
    packed, absmax = quantize_4bit(weight, kind)
    assert packed.dtype == torch.uint8 and packed.shape == (8, 128) and absmax.shape == (8, 4)
    blocks = weight.view(8, 4, 64)
    assert torch.equal(absmax, blocks.abs().amax(-1))
    error = (dequantize_4bit(packed, absmax, kind) - weight).abs()
    candidates = codebook(kind).view(1, 1, 1, 16) * absmax.view(8, 4, 1, 1)
    best = (candidates - blocks.unsqueeze(-1)).abs().amin(-1).view(8, 256)
    assert torch.allclose(error, best, rtol=0, atol=1e-6)
    # Half the widest gap between neighbouring codes, times the block's absmax.
    ascending = codebook(kind).sort().values
    half_gap = (ascending[1:] - ascending[:-1]).max() / 2
    assert bool((error <= half_gap * absmax.repeat_interleave(64, dim=1) + 1e-6).all())
    assert error.view(8, 4, 64).amin(-1).max() == 0  # each block's absmax is exact


def test_nf4_packs_first_weight_in_high_nibble():
    weight = torch.tensor(BNB_NF4 * 4).view(1, 64)  # codes 0..15 in order
    packed, absmax = quantize_4bit(weight, "nf4")
    expected = [16 * (2 * i % 16) + (2 * i + 1) % 16 for i in range(32)]
    assert packed.view(-1).tolist() == expected and absmax.tolist() == [[1.0]]


@pytest.mark.parametrize("kind", KINDS)
def test_4bit_zero_block_stays_zero(kind):
    weight = torch.zeros(2, 128)
    weight[1, 64:] = torch.linspace(-1, 1, 64)
    packed, absmax = quantize_4bit(weight, kind)
    assert dequantize_4bit(packed, absmax, kind)[:, :64].abs().max() == 0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_tokens", [1, 3, 17])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_4bit_apply_matches_dequantized_matmul(kind, num_tokens, dtype):
    weight = torch.randn(96, 256) * 0.05
    method = Nf4LinearMethod(kind)
    layer = make_layer(method, weight, dtype)
    x = torch.randn(num_tokens, 256).to(dtype)
    out = method.apply(layer, x, None)
    assert out.dtype == dtype and out.shape == (num_tokens, 96)
    dequantized = dequantize_4bit(layer.qweight, layer.absmax, kind)
    bound = BF16_BOUND if dtype == torch.bfloat16 else FP32_BOUND
    assert_close_to_dequantized(out, x, dequantized, relative=bound)


@pytest.mark.parametrize("kind", KINDS)
def test_4bit_apply_3d_input_bias_and_chunks(kind, monkeypatch):
    # 100 output rows in chunks of 3 rows (3 * 128 weights): many chunks, a short last one.
    monkeypatch.setattr(chunked_linear, "MAX_CHUNK_WEIGHTS", 3 * 128)
    weight = torch.randn(100, 128)
    method = Nf4LinearMethod(kind)
    layer = make_layer(method, weight, torch.bfloat16)
    x = torch.randn(2, 5, 128).bfloat16()
    bias = torch.randn(100).bfloat16()
    out = method.apply(layer, x, bias)
    assert out.shape == (2, 5, 100)
    dequantized = dequantize_4bit(layer.qweight, layer.absmax, kind)
    assert_close_to_dequantized(out.float() - bias.float(), x, dequantized, relative=BF16_BOUND)


def test_nf4_stores_about_half_a_byte_per_weight():
    layer = make_layer(Nf4LinearMethod("nf4"), torch.randn(1536, 576), torch.bfloat16)
    assert bytes_per_weight(layer, 1536 * 576) == pytest.approx(0.5 + 4 / 64)
    assert bytes_per_weight(layer, 1536 * 576) <= 0.57


def test_4bit_refuses_what_it_cannot_hold():
    method = Nf4LinearMethod("nf4")
    with pytest.raises(ValueError, match="divisible by its block size 64, got 100"):
        make_layer(method, torch.randn(8, 100), torch.bfloat16)
    with pytest.raises(ValueError, match="'nf4' or 'fp4'"):
        Nf4LinearMethod("int4")  # type: ignore[arg-type]
    layer = make_layer(method, torch.randn(8, 64), torch.bfloat16)
    with pytest.raises(ValueError, match=r"shape \[8, 64\], got \[8, 128\]"):
        method.load_dense(layer, torch.randn(8, 128))
    with pytest.raises(ValueError, match="inf or NaN"):
        method.load_dense(layer, torch.full((8, 64), float("nan")))
    with pytest.raises(ValueError, match="expected 64 input features, got 32"):
        method.apply(layer, torch.randn(1, 32).bfloat16(), None)
    with pytest.raises(ValueError, match="2-D float weight"):
        quantize_4bit(torch.ones(64, dtype=torch.int32), "nf4")
