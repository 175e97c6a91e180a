import pytest
import torch

import sluice.quantization.chunked_linear as chunked_linear
from sluice.quantization.fp8 import FP8_MAX, Fp8LinearMethod, quantize_fp8, upcast_fp8
from tests.unit.quantization.dense_reference import (
    BF16_BOUND,
    FP32_BOUND,
    assert_close_to_dequantized,
    bytes_per_weight,
    make_layer,
)

ALL_E4M3 = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn)
FINITE = ~ALL_E4M3.float().isnan()  # 0x7F and 0xFF are NaN in e4m3fn


def _dequantize(layer):
    return layer.qweight.float() * layer.weight_scale.unsqueeze(1)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_upcast_is_exact_for_every_finite_e4m3_value(dtype):
    out = upcast_fp8(ALL_E4M3, dtype)
    assert out.dtype == dtype
    assert torch.equal(out[FINITE].float(), ALL_E4M3.float()[FINITE])
    assert out[1].item() == 2.0**-9 and out[0x7E].item() == FP8_MAX  # smallest subnormal, max


def test_fp8_quantize_error_bounds():
    weight = torch.randn(32, 128) * torch.logspace(-3, 1, 32).unsqueeze(1)
    weight[3, 5] = 1e-7  # far below the row's smallest subnormal step
    q, scales = quantize_fp8(weight)
    assert q.dtype == torch.float8_e4m3fn and scales.shape == (32,)
    assert torch.equal(scales, weight.abs().amax(1) / FP8_MAX)
    assert torch.equal(q.float().abs().amax(1), torch.full((32,), FP8_MAX))
    error = (q.float() * scales.unsqueeze(1) - weight).abs()
    # Half a step: 2**-4 relative for normals, 2**-10 x scale (half of 2**-9) for subnormals.
    bound = torch.maximum(weight.abs() * 2**-4, scales.unsqueeze(1) * 2**-10)
    assert bool((error <= bound * (1 + 1e-5)).all())


def test_fp8_zero_row_stays_zero():
    q, scales = quantize_fp8(torch.zeros(2, 16))
    assert q.float().abs().max() == 0 and scales.abs().max() == 0


@pytest.mark.parametrize("num_tokens", [1, 3, 17])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_fp8_apply_matches_dequantized_matmul(num_tokens, dtype):
    method = Fp8LinearMethod()
    layer = make_layer(method, torch.randn(96, 256) * 0.02, dtype)
    x = torch.randn(num_tokens, 256).to(dtype)
    out = method.apply(layer, x, None)
    assert out.dtype == dtype and out.shape == (num_tokens, 96)
    bound = BF16_BOUND if dtype == torch.bfloat16 else FP32_BOUND
    assert_close_to_dequantized(out, x, _dequantize(layer), relative=bound)


def test_fp8_apply_3d_input_bias_and_chunks(monkeypatch):
    monkeypatch.setattr(chunked_linear, "MAX_CHUNK_WEIGHTS", 7 * 64)
    method = Fp8LinearMethod()
    layer = make_layer(method, torch.randn(50, 64), torch.bfloat16)
    x = torch.randn(3, 4, 64).bfloat16()
    bias = torch.randn(50).bfloat16()
    out = method.apply(layer, x, bias)
    assert out.shape == (3, 4, 50)
    assert_close_to_dequantized(
        out.float() - bias.float(), x, _dequantize(layer), relative=BF16_BOUND
    )
    assert bytes_per_weight(layer, 50 * 64) == pytest.approx(1 + 4 / 64)


def test_fp8_refuses_bad_input():
    method = Fp8LinearMethod()
    layer = make_layer(method, torch.randn(4, 32), torch.bfloat16)
    with pytest.raises(ValueError, match=r"shape \[4, 32\], got \[4, 16\]"):
        method.load_dense(layer, torch.randn(4, 16))
    with pytest.raises(ValueError, match="inf or NaN"):
        method.load_dense(layer, torch.full((4, 32), float("nan")))
    with pytest.raises(ValueError, match="expected 32 input features, got 16"):
        method.apply(layer, torch.randn(2, 16).bfloat16(), None)
