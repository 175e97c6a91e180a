import pytest
import torch

from sluice.quantization import Int4LinearMethod
from sluice.quantization.rtn import (
    Int8OnTheFlyLinearMethod,
    quantize_per_channel_int8,
    quantize_rtn,
)
from tests.unit.quantization.dense_reference import (
    BF16_BOUND,
    assert_close_to_dequantized,
    bytes_per_weight,
    make_layer,
)


def _dequantize(q, scales, zeros, group_size):
    """[output_size, input_size] float64 from the QuantizedWeight convention. float32 division
    in the quantizer can round a q by one at an exact .5: errors up to 0.5 + 1e-4 steps."""
    s = scales.double().t().repeat_interleave(group_size, dim=1)
    z = zeros.double().t().repeat_interleave(group_size, dim=1)
    return (q.double() - z) * s


def test_per_channel_int8_is_symmetric_absmax_over_127():
    weight = torch.randn(48, 256).bfloat16()
    qw = quantize_per_channel_int8(weight)
    assert qw.bits == 8 and qw.group_size == 256 and qw.q.dtype == torch.int32
    assert bool((qw.zeros == 128).all()) and qw.scales.shape == (1, 48)
    assert torch.equal(qw.scales[0], weight.float().abs().amax(1) / 127)
    assert qw.q.min() >= 1 and qw.q.max() <= 255
    error = (_dequantize(qw.q, qw.scales, qw.zeros, 256) - weight.double()).abs()
    assert bool((error <= qw.scales.double().t() * (0.5 + 1e-4)).all())


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("group_size", [32, 128, -1])
@pytest.mark.parametrize("sym", [True, False])
def test_rtn_error_within_half_a_step(bits, group_size, sym):
    weight = torch.randn(16, 256) + (0 if sym else 0.5)
    qw = quantize_rtn(weight, bits, group_size, sym)
    size = 256 if group_size == -1 else group_size
    assert qw.q.min() >= 0 and qw.q.max() < 2**bits and qw.group_size == size
    s = qw.scales.double().t().repeat_interleave(size, dim=1)
    error = (_dequantize(qw.q, qw.scales, qw.zeros, size) - weight.double()).abs()
    assert bool((error <= s * (0.5 + 1e-4)).all())


@pytest.mark.parametrize("sym", [True, False])
def test_rtn_zero_group_stays_zero(sym):
    weight = torch.zeros(2, 64)
    weight[1] = torch.randn(64)
    qw = quantize_rtn(weight, 4, 32, sym)
    assert _dequantize(qw.q, qw.scales, qw.zeros, 32)[0].abs().max() == 0


@pytest.mark.parametrize("num_tokens", [1, 3, 17])
def test_int8_on_the_fly_matches_dequantized_matmul(num_tokens):
    weight = torch.randn(96, 576) * 0.02
    method = Int8OnTheFlyLinearMethod()
    layer = make_layer(method, weight, torch.bfloat16)
    x = torch.randn(num_tokens, 576).bfloat16()
    out = method.apply(layer, x, None)
    assert out.dtype == torch.bfloat16 and out.shape == (num_tokens, 96)
    qw = quantize_per_channel_int8(weight)
    assert_close_to_dequantized(
        out, x, _dequantize(qw.q, qw.scales, qw.zeros, 576), relative=BF16_BOUND
    )


def test_int8_on_the_fly_3d_input_and_bias():
    weight = torch.randn(48, 128)
    method = Int8OnTheFlyLinearMethod()
    layer = make_layer(method, weight, torch.bfloat16)
    x = torch.randn(2, 3, 128).bfloat16()
    bias = torch.randn(48).bfloat16()
    out = method.apply(layer, x, bias)
    assert out.shape == (2, 3, 48)
    qw = quantize_per_channel_int8(weight)
    dequantized = _dequantize(qw.q, qw.scales, qw.zeros, 128)
    assert_close_to_dequantized(out.float() - bias.float(), x, dequantized, relative=BF16_BOUND)
    assert bytes_per_weight(layer, 48 * 128) == pytest.approx(1 + 2 / 128)


def test_int4_on_the_fly_runs_on_int4_kernel():
    weight = torch.randn(64, 256)
    qw = quantize_rtn(weight, 4, 64, sym=False)
    method = Int4LinearMethod(64)
    layer = torch.nn.Module()
    method.create_weights(layer, 256, 64, torch.bfloat16)
    method.load_weight(layer, qw)
    x = torch.randn(3, 256).bfloat16()
    out = method.apply(layer, x, None)
    assert_close_to_dequantized(
        out, x, _dequantize(qw.q, qw.scales, qw.zeros, 64), relative=BF16_BOUND
    )


def test_rtn_refuses_bad_input():
    with pytest.raises(ValueError, match="not divisible by group size 48"):
        quantize_rtn(torch.randn(4, 64), 4, 48, sym=True)
    with pytest.raises(ValueError, match="2 to 8 bits, got 9"):
        quantize_rtn(torch.randn(4, 64), 9, 64, sym=True)
    with pytest.raises(ValueError, match="2-D float weight"):
        quantize_rtn(torch.randn(64), 8, 64, sym=True)
    with pytest.raises(ValueError, match="inf or NaN"):
        quantize_per_channel_int8(torch.full((4, 64), float("inf")))
    method = Int8OnTheFlyLinearMethod()
    with pytest.raises(ValueError, match="multiple of 16"):
        make_layer(method, torch.randn(4, 40), torch.bfloat16)
    layer = make_layer(method, torch.randn(4, 64), torch.bfloat16)
    with pytest.raises(ValueError, match=r"shape \[4, 64\], got \[64, 4\]"):
        method.load_dense(layer, torch.randn(64, 4))
