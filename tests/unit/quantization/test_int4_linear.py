import pytest
import torch
from torch import nn

from sluice.distributed.parallel_context import ParallelContext
from sluice.model.layers.linear import ColumnParallelLinear
from sluice.quantization import (
    Int4LinearMethod,
    QuantizedWeight,
    chunked_linear,
    convert_awq,
    int4_linear,
)
from tests.unit.quantization.gptq_checkpoint import gptq_round_trip
from tests.unit.quantization.reference import (
    Reference,
    assert_matches,
    pack_awq,
    quantize,
)

BF16_BOUND = 2**-7  # twice the worst bf16 rounding, see assert_matches
FP32_BOUND = 2**-14  # only float32 accumulation error is left


def _layer(method: Int4LinearMethod, weight: QuantizedWeight, dtype: torch.dtype) -> nn.Module:
    layer = nn.Module()
    method.create_weights(layer, weight.input_size, weight.output_size, dtype)
    method.load_weight(layer, weight)
    return layer


def _as_weight(ref: Reference, group_size: int) -> QuantizedWeight:
    return QuantizedWeight(ref.q, ref.scales, ref.zeros, 4, group_size)


@pytest.mark.parametrize("group_size", [32, 64, 128, 256, 512])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("num_tokens", [1, 3, 17])
def test_int4_matches_dequantized_matmul_bf16(group_size, symmetric, num_tokens):
    ref = quantize(64, 1024, bits=4, group_size=group_size, symmetric=symmetric, seed=group_size)
    method = Int4LinearMethod(group_size)
    layer = _layer(method, _as_weight(ref, group_size), torch.bfloat16)
    x = torch.randn(num_tokens, 1024).bfloat16()
    out = method.apply(layer, x, None)
    assert out.dtype == torch.bfloat16 and out.shape == (num_tokens, 64)
    assert_matches(out, x, ref, center=8, relative=BF16_BOUND)


@pytest.mark.parametrize("input_size", [576, 1536])
def test_int4_per_channel_matches_dequantized_matmul(input_size):
    # 576 = 9 * 64: the kernel runs groups of 64, each with the channel's one scale.
    ref = quantize(48, input_size, bits=4, group_size=input_size, symmetric=False)
    method = Int4LinearMethod(None)
    layer = _layer(method, _as_weight(ref, input_size), torch.bfloat16)
    x = torch.randn(3, input_size).bfloat16()
    assert_matches(method.apply(layer, x, None), x, ref, center=8, relative=BF16_BOUND)


def test_int4_float32_activations_run_in_float32():
    ref = quantize(32, 256, bits=4, group_size=64, symmetric=False)
    method = Int4LinearMethod(64)
    layer = _layer(method, _as_weight(ref, 64), torch.float32)
    x = torch.randn(17, 256)
    out = method.apply(layer, x, None)
    assert out.dtype == torch.float32
    assert_matches(out, x, ref, center=8, relative=FP32_BOUND)


@pytest.mark.parametrize("output_size", [3072, 80])
def test_int4_float32_activations_multiply_the_dequantized_weight(monkeypatch, output_size):
    # Chunks of output rows, the last one narrower than a packing block where 80 rows end.
    monkeypatch.setattr(chunked_linear, "MAX_CHUNK_WEIGHTS", 32 * 256)
    ref = quantize(output_size, 256, bits=4, group_size=32, symmetric=False)
    method = Int4LinearMethod(32)
    layer = _layer(method, _as_weight(ref, 32), torch.float32)
    x = torch.randn(5, 256)
    assert_matches(method.apply(layer, x, None), x, ref, center=8, relative=FP32_BOUND)


def test_int4_float32_activations_take_the_kernel_where_its_packing_is_unknown(monkeypatch):
    monkeypatch.setattr(int4_linear, "cpu_packed_layout", lambda: None)
    ref = quantize(32, 256, bits=4, group_size=64, symmetric=False)
    method = Int4LinearMethod(64)
    layer = _layer(method, _as_weight(ref, 64), torch.float32)
    x = torch.randn(3, 256)
    assert_matches(method.apply(layer, x, None), x, ref, center=8, relative=FP32_BOUND)


def test_int4_float32_activations_can_run_the_kernel_in_bfloat16():
    ref = quantize(32, 256, bits=4, group_size=64, symmetric=False)
    method = Int4LinearMethod(64, kernel_dtype=torch.bfloat16)
    layer = _layer(method, _as_weight(ref, 64), torch.float32)
    x = torch.randn(17, 256)
    out = method.apply(layer, x, None)
    assert layer.scales_and_zeros.dtype == torch.bfloat16
    assert out.dtype == torch.float32
    assert_matches(out, x, ref, center=8, relative=BF16_BOUND)


def test_int4_keeps_leading_dims_and_adds_bias():
    ref = quantize(32, 128, bits=4, group_size=32, symmetric=True)
    method = Int4LinearMethod(32)
    layer = _layer(method, _as_weight(ref, 32), torch.float32)
    x = torch.randn(2, 3, 128)
    bias = torch.randn(32)
    out = method.apply(layer, x, bias)
    assert out.shape == (2, 3, 32)
    assert_matches(out - bias, x, ref, center=8, relative=FP32_BOUND)


@pytest.mark.parametrize("group_size", [32, 128, -1])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("v1", [True, False])
def test_int4_runs_gptq_checkpoint(group_size, symmetric, act_order, v1):
    size = 256 if group_size == -1 else group_size
    ref = quantize(48, 256, bits=4, group_size=size, symmetric=symmetric, act_order=act_order)
    weight = gptq_round_trip(ref, group_size, v1=v1)
    method = Int4LinearMethod(None if group_size == -1 else group_size, has_input_perm=act_order)
    layer = _layer(method, weight, torch.bfloat16)
    for num_tokens in (1, 3, 17):
        x = torch.randn(num_tokens, 256).bfloat16()
        assert_matches(method.apply(layer, x, None), x, ref, center=8, relative=BF16_BOUND)


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_int4_runs_a_gptq_checkpoint_with_a_short_last_group(act_order, dtype):
    # AutoGPTQ's layout for SmolLM2's 576 inputs at group size 128: groups of 128 x 4 and 64.
    ref = quantize(64, 576, bits=4, group_size=128, symmetric=False, act_order=act_order)
    weight = gptq_round_trip(ref, 128, v1=True)
    method = Int4LinearMethod(128, has_input_perm=act_order)
    layer = _layer(method, weight, dtype)
    bound = BF16_BOUND if dtype == torch.bfloat16 else FP32_BOUND
    for num_tokens in (1, 17):
        x = torch.randn(num_tokens, 576).to(dtype)
        assert_matches(method.apply(layer, x, None), x, ref, center=8, relative=bound)


@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_int4_runs_awq_checkpoint(group_size):
    ref = quantize(64, 256, bits=4, group_size=group_size, symmetric=False)
    tensors = pack_awq(ref)
    weight = convert_awq(
        tensors["qweight"], tensors["qzeros"], tensors["scales"], group_size=group_size
    )
    method = Int4LinearMethod(group_size)
    layer = _layer(method, weight, torch.bfloat16)
    for num_tokens in (1, 3, 17):
        x = torch.randn(num_tokens, 256).bfloat16()
        assert_matches(method.apply(layer, x, None), x, ref, center=8, relative=BF16_BOUND)


def test_int4_plugs_into_column_parallel_linear():
    ref = quantize(64, 128, bits=4, group_size=64, symmetric=False)
    method = Int4LinearMethod(64)
    linear = ColumnParallelLinear(
        128, [32, 32], bias=True, parallel=ParallelContext(), dtype=torch.bfloat16, method=method
    )
    method.load_weight(linear, _as_weight(ref, 64))
    linear.bias.data.zero_()
    x = torch.randn(3, 128).bfloat16()
    assert_matches(linear(x), x, ref, center=8, relative=BF16_BOUND)


@pytest.mark.parametrize(
    ("group_size", "input_size", "output_size", "message"),
    [
        (128, 96, 16, "group size 128 for input size 96"),
        (48, 96, 16, "multiple of 32 input features"),
        (None, 80, 16, "group size 80 for input size 80"),
        (32, 64, 40, "output size divisible by 16, got 40"),
    ],
)
def test_int4_refuses_shapes_the_kernel_cannot_run(group_size, input_size, output_size, message):
    with pytest.raises(ValueError, match=message):
        Int4LinearMethod(group_size).create_weights(
            nn.Module(), input_size, output_size, torch.bfloat16
        )


def test_int4_refuses_a_weight_of_another_shape_or_width():
    ref = quantize(32, 128, bits=4, group_size=32, symmetric=True)
    layer = nn.Module()
    method = Int4LinearMethod(32)
    method.create_weights(layer, 128, 16, torch.bfloat16)
    with pytest.raises(ValueError, match=r"expected a 4-bit \[16, 128\] weight"):
        method.load_weight(layer, _as_weight(ref, 32))
    with pytest.raises(ValueError, match="has_input_perm"):
        ref16 = quantize(16, 128, bits=4, group_size=32, symmetric=True)
        weight = QuantizedWeight(ref16.q, ref16.scales, ref16.zeros, 4, 32, torch.arange(128))
        method.load_weight(layer, weight)


def test_int4_row_gets_the_same_result_alone_as_among_others():
    # Speculative verification relies on it (see UnquantizedLinearMethod.apply).
    ref = quantize(64, 256, bits=4, group_size=64, symmetric=False)
    method = Int4LinearMethod(64)
    layer = _layer(method, _as_weight(ref, 64), torch.bfloat16)
    x = torch.randn(17, 256).bfloat16()
    together = method.apply(layer, x, None)
    for row in (0, 5, 16):
        assert torch.equal(method.apply(layer, x[row : row + 1], None), together[row : row + 1])
