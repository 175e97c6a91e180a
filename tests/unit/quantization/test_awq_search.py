import json

import pytest
import torch
from safetensors import safe_open

from sluice.quantization import convert_awq
from sluice.quantization.awq_search import awq_quantize_model, search_scale
from sluice.quantization.awq_writer import awq_tensors, write_awq_checkpoint
from sluice.quantization.gptq_algorithm import (
    GptqParams,
    HessianAccumulator,
    gptq_quantize,
    round_to_nearest,
)
from sluice.quantization.sequential import InputStats
from tests.unit.quantization.reference import AWQ_PACK_ORDER, pack_columns
from tests.unit.quantization.tiny_llama import LAYERS, write_tiny_llama

PARAMS = GptqParams(4, 32, sym=False)


def _stats(inputs: torch.Tensor) -> InputStats:
    accumulator = HessianAccumulator(inputs.shape[1])
    accumulator.add(inputs)
    return InputStats(accumulator.hessian, inputs.abs().mean(0))


def _output_error(weight: torch.Tensor, dequantized: torch.Tensor, inputs: torch.Tensor) -> float:
    return float((inputs @ (dequantized - weight).t()).norm() / (inputs @ weight.t()).norm())


def test_scale_search_beats_round_to_nearest_when_a_few_channels_dominate():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(64, 128, generator=generator)
    salient = torch.ones(128)
    salient[::16] = 20.0  # a few input channels carry most of the activation
    inputs = torch.randn(512, 128, generator=generator) * salient
    scale = search_scale([weight], _stats(inputs), PARAMS)

    awq = round_to_nearest(weight * scale, PARAMS).dequantize() / scale
    rtn = round_to_nearest(weight, PARAMS).dequantize()
    assert _output_error(weight, awq, inputs) < 0.7 * _output_error(weight, rtn, inputs)
    assert bool((scale[::16] > scale[1::16]).all())  # the salient channels got the finer grid


def test_scale_search_keeps_plain_rounding_when_channels_are_alike():
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(32, 64, generator=generator)
    scale = search_scale([weight], _stats(torch.ones(8, 64)), PARAMS)
    assert torch.allclose(scale, torch.ones(64))


def test_awq_tensors_read_back_exactly_with_convert_awq():
    generator = torch.Generator().manual_seed(2)
    result = round_to_nearest(torch.randn(64, 96, generator=generator), PARAMS)
    tensors = awq_tensors("p", result)
    assert tensors["p.qweight"].shape == (96, 8) and tensors["p.qzeros"].shape == (3, 8)
    # The same bits as an independent packer in AutoAWQ's order.
    assert torch.equal(tensors["p.qweight"], pack_columns(result.q.t(), 4, AWQ_PACK_ORDER))
    weight = convert_awq(
        tensors["p.qweight"], tensors["p.qzeros"], tensors["p.scales"], group_size=32
    )
    assert torch.equal(weight.q, result.q) and torch.equal(weight.zeros, result.zeros)
    assert torch.equal(weight.scales, result.scales)


def test_awq_tensors_refuse_what_the_layout_cannot_hold():
    generator = torch.Generator().manual_seed(3)
    weight, inputs = torch.randn(16, 64, generator=generator), torch.randn(80, 64)
    with pytest.raises(ValueError, match="4-bit"):
        awq_tensors("p", round_to_nearest(weight, GptqParams(8, 32)))
    act_order = gptq_quantize(weight, _stats(inputs).hessian, GptqParams(4, 32, desc_act=True))
    with pytest.raises(ValueError, match="input order"):
        awq_tensors("p", act_order)


@pytest.mark.slow
def test_awq_quantize_model_folds_scales_into_norms_and_writes_a_checkpoint(tmp_path):
    from transformers import AutoModelForCausalLM

    source = write_tiny_llama(tmp_path / "tiny")
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    with torch.no_grad():  # a few loud input channels, as trained models have, for AWQ to find
        for name, param in model.named_parameters():
            if name.endswith("layernorm.weight"):
                param[::8] = 20.0
    model.save_pretrained(source)
    original = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    token_ids = torch.randint(0, model.config.vocab_size, (4, 32), generator=torch.Generator())
    results, norms = awq_quantize_model(model, token_ids, PARAMS)

    assert len(results) == LAYERS * 7
    assert set(norms) == {
        f"model.layers.{layer}.{norm}.weight"
        for layer in range(LAYERS)
        for norm in ("input_layernorm", "post_attention_layernorm")
    }
    for name, weight in norms.items():  # the norms took 1/s, so they changed
        assert not torch.equal(weight, original.get_submodule(name.removesuffix(".weight")).weight)
    rounded = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    for prefix in results:
        linear = rounded.get_submodule(prefix)
        linear.weight.data = round_to_nearest(linear.weight.data, PARAMS).dequantize()
    with torch.inference_mode():  # the scaled model's logits are closer than plain rounding's
        original_logits = original(token_ids).logits
        awq_error = (model(token_ids).logits - original_logits).norm()
        rtn_error = (rounded(token_ids).logits - original_logits).norm()
    assert float(awq_error) < 0.8 * float(rtn_error)

    output = tmp_path / "awq"
    output.mkdir()
    write_awq_checkpoint(source, output, results, norms, 32)
    config = json.loads((output / "config.json").read_text())["quantization_config"]
    assert config == {
        "quant_method": "awq",
        "bits": 4,
        "group_size": 32,
        "zero_point": True,
        "version": "gemm",
        "modules_to_not_convert": None,
    }
    with safe_open(str(output / "model.safetensors"), framework="pt") as reader:
        norm = "model.layers.0.input_layernorm.weight"
        assert torch.equal(reader.get_tensor(norm), norms[norm])
        assert "model.layers.0.mlp.up_proj.weight" not in reader.keys()  # noqa: SIM118
        assert "model.layers.0.mlp.up_proj.qweight" in reader.keys()  # noqa: SIM118
