import pytest
import torch

from sluice.quantization.gptq_algorithm import (
    GptqParams,
    HessianAccumulator,
    gptq_quantize,
    relative_output_error,
    round_to_nearest,
)


def _layer(output_size: int = 32, input_size: int = 128, seed: int = 0):
    """A weight and correlated inputs of uneven scale, like a transformer's activations."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(input_size, input_size, generator=generator) * 0.3 + torch.eye(input_size)
    inputs = torch.randn(512, input_size, generator=generator) @ mixing
    inputs = inputs * torch.linspace(0.1, 3.0, input_size)
    weight = torch.randn(output_size, input_size, generator=generator) * 0.05
    hessian = HessianAccumulator(input_size)
    hessian.add(inputs)
    return weight, inputs, hessian.hessian


def _output_error(weight, inputs, dequantized) -> float:
    return float(((inputs @ (dequantized - weight).t()) ** 2).mean())


def test_hessian_accumulator_equals_two_xtx_over_rows_in_any_batching():
    inputs = torch.randn(3, 70, 16)
    accumulator = HessianAccumulator(16)
    for batch in inputs:
        accumulator.add(batch[:30])
        accumulator.add(batch[30:].unsqueeze(0))
    rows = inputs.reshape(-1, 16)
    assert accumulator.num_rows == 210
    torch.testing.assert_close(accumulator.hessian, 2 * rows.t() @ rows / 210)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("group_size", [32, -1])
@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("desc_act", [False, True])
def test_gptq_output_error_is_below_round_to_nearest(bits, group_size, sym, desc_act):
    weight, inputs, hessian = _layer()
    params = GptqParams(bits, group_size, sym, desc_act)
    gptq = _output_error(weight, inputs, gptq_quantize(weight, hessian, params).dequantize())
    rtn = _output_error(weight, inputs, round_to_nearest(weight, params).dequantize())
    assert gptq < 0.85 * rtn


def test_relative_output_error_matches_the_inputs_directly():
    weight, inputs, hessian = _layer()
    dequantized = gptq_quantize(weight, hessian, GptqParams(4, 32)).dequantize()
    direct = ((inputs @ (dequantized - weight).t()) ** 2).sum() / ((inputs @ weight.t()) ** 2).sum()
    assert relative_output_error(weight, dequantized, hessian) == pytest.approx(float(direct), 1e-4)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("sym", [True, False])
def test_gptq_result_is_on_its_grid(bits, sym):
    weight, _, hessian = _layer()
    result = gptq_quantize(weight, hessian, GptqParams(bits, 32, sym))
    assert result.q.dtype == torch.int32 and result.q.shape == (32, 128)
    assert int(result.q.min()) >= 0 and int(result.q.max()) <= 2**bits - 1
    assert result.scales.dtype == torch.float16 and result.scales.shape == (4, 32)
    assert result.zeros.shape == (4, 32)
    assert int(result.zeros.min()) >= 0 and int(result.zeros.max()) <= 2**bits - 1
    if sym:
        assert bool((result.zeros == 2 ** (bits - 1)).all())
    assert torch.equal(result.g_idx, torch.arange(128, dtype=torch.int32) // 32)
    # every weight lies within the grid's range, so no value should be far off
    assert float((result.dequantize() - weight).abs().max()) < float(weight.abs().max())


def test_gptq_act_order_groups_follow_decreasing_hessian_diagonal():
    weight, _, hessian = _layer()
    result = gptq_quantize(weight, hessian, GptqParams(4, 32, desc_act=True))
    order = torch.argsort(torch.diag(hessian), descending=True)
    assert torch.equal(result.g_idx[order].long(), torch.arange(128) // 32)
    assert torch.equal(torch.bincount(result.g_idx.long()), torch.full((4,), 32))
    runtime = result.to_quantized_weight()
    assert runtime.input_perm is not None
    assert torch.equal(result.g_idx[runtime.input_perm].long(), torch.arange(128) // 32)


def test_gptq_per_channel_has_one_group():
    weight, _, hessian = _layer()
    result = gptq_quantize(weight, hessian, GptqParams(4, -1))
    assert result.group_size == 128 and result.scales.shape == (1, 32)
    assert not bool(result.g_idx.any())


def test_gptq_group_larger_than_block_and_not_dividing_it():
    weight, inputs, hessian = _layer(input_size=384)
    for group_size in (192, 96):
        params = GptqParams(4, group_size)
        result = gptq_quantize(weight, hessian, params)
        assert result.scales.shape == (384 // group_size, 32)
        rtn = round_to_nearest(weight, params).dequantize()
        assert _output_error(weight, inputs, result.dequantize()) < _output_error(
            weight, inputs, rtn
        )


def test_gptq_zeroes_weights_of_inputs_never_seen():
    weight, inputs, _ = _layer()
    inputs[:, 5] = 0
    accumulator = HessianAccumulator(128)
    accumulator.add(inputs)
    result = gptq_quantize(weight, accumulator.hessian, GptqParams(4, 32))
    assert bool((result.dequantize()[:, 5] == 0).all())


def test_gptq_all_zero_group_dequantizes_to_zero():
    weight, _, hessian = _layer()
    weight[:, :32] = 0
    result = round_to_nearest(weight, GptqParams(4, 32, sym=False))
    assert bool((result.dequantize()[:, :32] == 0).all())


@pytest.mark.parametrize("desc_act", [False, True])
def test_gptq_group_not_dividing_input_leaves_a_short_last_group(desc_act):
    weight, inputs, hessian = _layer(input_size=160)  # AutoGPTQ: ceil(160 / 64) = 3 groups
    params = GptqParams(4, 64, desc_act=desc_act)
    result = gptq_quantize(weight, hessian, params)
    assert result.scales.shape == (3, 32) and result.zeros.shape == (3, 32)
    assert torch.bincount(result.g_idx.long()).tolist() == [64, 64, 32]
    rtn = round_to_nearest(weight, params)
    assert torch.bincount(rtn.g_idx.long()).tolist() == [64, 64, 32]
    gptq_error = _output_error(weight, inputs, result.dequantize())
    assert gptq_error < _output_error(weight, inputs, rtn.dequantize())
    weight = result.to_quantized_weight()
    assert weight.num_groups == 3
    perm = torch.arange(160) if weight.input_perm is None else weight.input_perm
    assert torch.equal(weight.dequantize(), result.dequantize()[:, perm])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"bits": 3}, "bits must be 4 or 8"), ({"group_size": 0}, "group size must be -1")],
)
def test_gptq_params_refuse_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GptqParams(**kwargs)


@pytest.mark.parametrize("sym", [False, True])
def test_clip_search_lowers_rounding_error_of_heavy_tailed_weights(sym):
    torch.manual_seed(5)
    # Laplace-distributed, as trained weights roughly are: rare large values stretch min/max.
    weight = torch.distributions.Laplace(0.0, 0.05).sample((32, 128))
    plain = round_to_nearest(weight, GptqParams(4, 64, sym=sym)).dequantize()
    clipped = round_to_nearest(weight, GptqParams(4, 64, sym=sym, clip_search=True)).dequantize()

    def error(rounded: torch.Tensor) -> float:
        return float((rounded - weight).abs().pow(2.4).sum())

    assert error(clipped) < 0.97 * error(plain)


def test_clip_search_never_rounds_worse_than_min_max():
    weight, inputs, hessian = _layer(seed=6)
    for group_size in (32, -1):
        plain = round_to_nearest(weight, GptqParams(4, group_size))
        clipped = round_to_nearest(weight, GptqParams(4, group_size, clip_search=True))
        plain_error = (plain.dequantize() - weight).abs().pow(2.4).sum(1)
        clipped_error = (clipped.dequantize() - weight).abs().pow(2.4).sum(1)
        # per row and group the search keeps min/max unless a shrunk range is better
        assert bool((clipped_error <= plain_error * (1 + 1e-5)).all())
        gptq = gptq_quantize(weight, hessian, GptqParams(4, group_size, clip_search=True))
        assert _output_error(weight, inputs, gptq.dequantize()) < _output_error(
            weight, inputs, plain.dequantize()
        )
