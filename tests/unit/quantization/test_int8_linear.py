import pytest
import torch
from torch import nn

from sluice.quantization import (
    Int8LinearMethod,
    QuantizedWeight,
)
from tests.unit.quantization.gptq_checkpoint import gptq_round_trip
from tests.unit.quantization.reference import Reference, assert_matches, quantize

BF16_BOUND = 2**-7  # twice the worst bf16 rounding, see assert_matches
FP32_BOUND = 2**-14  # only float32 accumulation error is left


def _layer(method: Int8LinearMethod, weight: QuantizedWeight, dtype: torch.dtype) -> nn.Module:
    layer = nn.Module()
    method.create_weights(layer, weight.input_size, weight.output_size, dtype)
    method.load_weight(layer, weight)
    return layer


def _as_weight(ref: Reference, group_size: int) -> QuantizedWeight:
    return QuantizedWeight(ref.q, ref.scales, ref.zeros, 8, group_size)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("num_tokens", [1, 3, 17])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_int8_per_channel_matches_dequantized_matmul(symmetric, num_tokens, dtype):
    ref = quantize(96, 576, bits=8, group_size=576, symmetric=symmetric)
    method = Int8LinearMethod(None, symmetric=symmetric)
    layer = _layer(method, _as_weight(ref, 576), dtype)
    x = torch.randn(num_tokens, 576).to(dtype)
    out = method.apply(layer, x, None)
    assert out.dtype == dtype and out.shape == (num_tokens, 96)
    bound = BF16_BOUND if dtype == torch.bfloat16 else FP32_BOUND
    assert_matches(out, x, ref, center=128, relative=bound)


@pytest.mark.parametrize("symmetric", [True, False])
def test_int8_float32_activations_can_run_the_kernel_in_bfloat16(symmetric):
    ref = quantize(96, 576, bits=8, group_size=576, symmetric=symmetric)
    method = Int8LinearMethod(None, symmetric=symmetric, kernel_dtype=torch.bfloat16)
    layer = _layer(method, _as_weight(ref, 576), torch.float32)
    x = torch.randn(5, 576)
    out = method.apply(layer, x, None)
    assert layer.scales.dtype == torch.bfloat16
    assert out.dtype == torch.float32
    assert_matches(out, x, ref, center=128, relative=BF16_BOUND)


@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_int8_grouped_matches_dequantized_matmul(group_size, symmetric, dtype):
    # float32 activations multiply the weight dequantized chunk by chunk, not the kernel.
    ref = quantize(48, 256, bits=8, group_size=group_size, symmetric=symmetric)
    method = Int8LinearMethod(group_size, symmetric=symmetric)
    layer = _layer(method, _as_weight(ref, group_size), dtype)
    x = torch.randn(2, 3, 256).to(dtype)
    bias = torch.randn(48).to(dtype)
    out = method.apply(layer, x, bias)
    assert out.shape == (2, 3, 48) and out.dtype == dtype
    bound = BF16_BOUND if dtype == torch.bfloat16 else FP32_BOUND
    assert_matches(out.float() - bias.float(), x, ref, center=128, relative=bound)


@pytest.mark.parametrize("group_size", [64, -1])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("v1", [True, False])
def test_int8_runs_gptq_checkpoint(group_size, symmetric, act_order, v1):
    size = 256 if group_size == -1 else group_size
    ref = quantize(32, 256, bits=8, group_size=size, symmetric=symmetric, act_order=act_order)
    weight = gptq_round_trip(ref, group_size, v1=v1)
    method = Int8LinearMethod(
        None if group_size == -1 else group_size, symmetric=symmetric, has_input_perm=act_order
    )
    layer = _layer(method, weight, torch.bfloat16)
    for num_tokens in (1, 3, 17):
        x = torch.randn(num_tokens, 256).bfloat16()
        assert_matches(method.apply(layer, x, None), x, ref, center=128, relative=BF16_BOUND)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("act_order", [False, True])
def test_int8_runs_a_gptq_checkpoint_with_a_short_last_group(symmetric, act_order):
    # AutoGPTQ's layout for SmolLM2's 576 inputs at group size 128: groups of 128 x 4 and 64.
    ref = quantize(32, 576, bits=8, group_size=128, symmetric=symmetric, act_order=act_order)
    weight = gptq_round_trip(ref, 128, v1=True)
    method = Int8LinearMethod(128, symmetric=symmetric, has_input_perm=act_order)
    layer = _layer(method, weight, torch.float32)
    for num_tokens in (1, 17):
        x = torch.randn(num_tokens, 576)
        assert_matches(method.apply(layer, x, None), x, ref, center=128, relative=FP32_BOUND)


@pytest.mark.parametrize(
    ("group_size", "input_size", "message"),
    [
        (None, 24, "group size 24 for input size 24"),
        (128, 96, "group size 128 for input size 96"),
        (40, 96, "multiple of 16 input features"),
        (8, 64, "multiple of 16 input features"),
    ],
)
def test_int8_refuses_shapes_the_kernel_cannot_run(group_size, input_size, message):
    with pytest.raises(ValueError, match=message):
        Int8LinearMethod(group_size, symmetric=True).create_weights(
            nn.Module(), input_size, 16, torch.bfloat16
        )


def test_int8_symmetric_refuses_other_zero_points():
    ref = quantize(16, 64, bits=8, group_size=64, symmetric=False)
    method = Int8LinearMethod(None, symmetric=True)
    layer = nn.Module()
    method.create_weights(layer, 64, 16, torch.bfloat16)
    with pytest.raises(ValueError, match="every zero point at 128"):
        method.load_weight(layer, _as_weight(ref, 64))


def test_int8_refuses_a_four_bit_weight():
    ref = quantize(16, 64, bits=4, group_size=64, symmetric=True)
    method = Int8LinearMethod(None, symmetric=True)
    layer = nn.Module()
    method.create_weights(layer, 64, 16, torch.bfloat16)
    with pytest.raises(ValueError, match=r"expected an 8-bit \[16, 64\] weight, got a 4-bit"):
        method.load_weight(layer, QuantizedWeight(ref.q, ref.scales, ref.zeros, 4, 64))


@pytest.mark.parametrize("group_size", [None, 64])
def test_int8_row_gets_the_same_result_alone_as_among_others(group_size):
    # Speculative verification relies on it (see UnquantizedLinearMethod.apply).
    ref = quantize(64, 256, bits=8, group_size=group_size or 256, symmetric=False)
    method = Int8LinearMethod(group_size, symmetric=False)
    layer = _layer(method, _as_weight(ref, group_size or 256), torch.bfloat16)
    x = torch.randn(17, 256).bfloat16()
    together = method.apply(layer, x, None)
    for row in (0, 5, 16):
        assert torch.equal(method.apply(layer, x[row : row + 1], None), together[row : row + 1])
