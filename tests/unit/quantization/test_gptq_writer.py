import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sluice.quantization import GptqCheckpointFormat, convert_gptq
from sluice.quantization.gptq_algorithm import (
    GptqParams,
    GptqResult,
    HessianAccumulator,
    gptq_quantize,
)
from sluice.quantization.gptq_writer import gptq_tensors, write_gptq_checkpoint
from sluice.quantization.packing import pack_columns, pack_rows, unpack_columns, unpack_rows


def _result(bits: int, group_size: int, desc_act: bool, sym: bool = False) -> GptqResult:
    generator = torch.Generator().manual_seed(bits + group_size)
    weight = torch.randn(64, 256, generator=generator)
    accumulator = HessianAccumulator(256)
    accumulator.add(torch.randn(300, 256, generator=generator) * torch.linspace(0.2, 2, 256))
    return gptq_quantize(weight, accumulator.hessian, GptqParams(bits, group_size, sym, desc_act))


@pytest.mark.parametrize("bits", [4, 8])
def test_pack_rows_and_columns_invert_unpacking(bits):
    values = torch.randint(0, 2**bits, (16, 24), dtype=torch.int32)
    values[0, :] = 2**bits - 1  # top bit set in the last slot: the word is negative as int32
    rows, cols = pack_rows(values, bits), pack_columns(values, bits)
    assert rows.dtype == cols.dtype == torch.int32
    assert rows.shape == (16 * bits // 32, 24) and cols.shape == (16, 24 * bits // 32)
    assert torch.equal(unpack_rows(rows, bits), values)
    assert torch.equal(unpack_columns(cols, bits), values)


def test_pack_refuses_sizes_not_filling_words():
    with pytest.raises(ValueError, match="do not pack"):
        pack_columns(torch.zeros(2, 12, dtype=torch.int32), 4)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("group_size", [64, -1])
@pytest.mark.parametrize("desc_act", [False, True])
def test_written_tensors_read_back_exactly_with_convert_gptq(bits, group_size, desc_act):
    result = _result(bits, group_size, desc_act)
    tensors = gptq_tensors("layer", result)
    assert tensors["layer.qweight"].shape == (256 * bits // 32, 64)
    assert tensors["layer.qzeros"].shape == (result.scales.shape[0], 64 * bits // 32)
    assert tensors["layer.scales"].dtype == torch.float16
    assert tensors["layer.g_idx"].dtype == torch.int32
    weight = convert_gptq(
        tensors["layer.qweight"],
        tensors["layer.qzeros"],
        tensors["layer.scales"],
        tensors["layer.g_idx"],
        bits=bits,
        group_size=group_size,
        checkpoint_format=GptqCheckpointFormat.V1,
    )
    expected = result.to_quantized_weight()
    assert torch.equal(weight.q, expected.q)
    assert torch.equal(weight.zeros, result.zeros)
    assert torch.equal(weight.scales, result.scales)
    if desc_act and group_size != -1:  # one group: any order is already contiguous
        assert weight.input_perm is not None and torch.equal(weight.input_perm, expected.input_perm)
        assert torch.equal(weight.q, result.q[:, weight.input_perm])
    else:
        assert weight.input_perm is None and torch.equal(weight.q, result.q)


def test_written_zero_points_cover_the_whole_range():
    result = _result(4, 64, False)
    zeros = torch.arange(64, dtype=torch.int32).remainder(16).expand(4, 64).contiguous()
    edited = GptqResult(result.q, result.scales, zeros, result.g_idx, 4, 64)
    tensors = gptq_tensors("p", edited)
    assert torch.equal(unpack_columns(tensors["p.qzeros"], 4), (zeros - 1) % 16)  # v1: z - 1
    weight = convert_gptq(
        tensors["p.qweight"], tensors["p.qzeros"], tensors["p.scales"], None, bits=4, group_size=64
    )
    assert torch.equal(weight.zeros, zeros)


def test_write_gptq_checkpoint_replaces_weights_and_keeps_the_rest(tmp_path):
    source, output = tmp_path / "source", tmp_path / "output"
    source.mkdir()
    output.mkdir()
    result = _result(4, 64, True, sym=True)
    others = {"model.embed_tokens.weight": torch.randn(10, 256), "norm.weight": torch.ones(256)}
    save_file({"layer.weight": torch.randn(64, 256), **others}, source / "model.safetensors")
    (source / "model.safetensors").chmod(0o644)
    (source / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 256}))
    for name in ("tokenizer.json", "generation_config.json", "chat_template.jinja"):
        (source / name).write_text(name)
    (source / ".sluice-converted.json").write_text("{}")
    params = GptqParams(4, 64, sym=True, desc_act=True)

    write_gptq_checkpoint(source, output, {"layer": result}, params)

    with safe_open(str(output / "model.safetensors"), framework="pt") as reader:
        names = set(reader.keys())  # noqa: SIM118
        assert torch.equal(reader.get_tensor("norm.weight"), others["norm.weight"])
        assert torch.equal(reader.get_tensor("layer.g_idx"), result.g_idx)
    assert names == {"layer.qweight", "layer.qzeros", "layer.scales", "layer.g_idx", *others}
    assert (output / "model.safetensors").stat().st_mode == (
        source / "model.safetensors"
    ).stat().st_mode
    config = json.loads((output / "config.json").read_text())
    assert config["hidden_size"] == 256
    assert config["quantization_config"] == {
        "quant_method": "gptq",
        "bits": 4,
        "group_size": 64,
        "desc_act": True,
        "sym": True,
        "damp_percent": 0.01,
        "clip_search": False,
        "true_sequential": True,
        "static_groups": False,
        "checkpoint_format": "gptq",
    }
    assert json.loads((output / "quantize_config.json").read_text())["checkpoint_format"] == "gptq"
    copied = {path.name for path in output.iterdir()}
    assert copied == {
        "model.safetensors",
        "config.json",
        "quantize_config.json",
        "tokenizer.json",
        "generation_config.json",
        "chat_template.jinja",
    }


def test_write_gptq_checkpoint_refuses_unknown_linear(tmp_path):
    save_file({"other.weight": torch.zeros(2)}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "out").mkdir()
    with pytest.raises(ValueError, match="no tensor layer.weight"):
        write_gptq_checkpoint(
            tmp_path, tmp_path / "out", {"layer": _result(4, 64, False)}, GptqParams()
        )
