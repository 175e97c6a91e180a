import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from sluice.cli import main
from sluice.quantization import convert_gptq
from tests.unit.quantization.tiny_llama import HIDDEN, INTERMEDIATE, LAYERS, write_tiny_llama

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def _quantize(model: Path, output: Path, *flags: str) -> int:
    return main(["quantize", "--model-id", str(model), "--output", str(output), *flags])


@pytest.mark.slow
@pytest.mark.parametrize("act_order", [False, True])
def test_quantize_writes_a_gptq_checkpoint_that_reads_back(tiny_llama, tmp_path, act_order):
    from transformers import AutoModelForCausalLM

    output = tmp_path / "gptq"
    flags = ["--group-size", "32", "--sym", "--calibration-samples", "4", "--seq-len", "64"]
    assert _quantize(tiny_llama, output, *flags, *(["--act-order"] if act_order else [])) == 0

    config = json.loads((output / "config.json").read_text())
    assert config["quantization_config"]["bits"] == 4
    assert config["quantization_config"]["desc_act"] is act_order
    assert (output / "tokenizer.json").is_file() and (output / "quantize_config.json").is_file()
    original = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    with safe_open(str(output / "model.safetensors"), framework="pt") as reader:
        names = set(reader.keys())  # noqa: SIM118
        assert "model.embed_tokens.weight" in names and "model.norm.weight" in names
        for layer in range(LAYERS):
            for linear in LINEARS:
                block = (
                    "self_attn"
                    if linear.endswith(("q_proj", "k_proj", "v_proj", "o_proj"))
                    else "mlp"
                )
                prefix = f"model.layers.{layer}.{block}.{linear}"
                assert f"{prefix}.weight" not in names
                weight = convert_gptq(
                    *(reader.get_tensor(f"{prefix}.{part}") for part in ("qweight", "qzeros")),
                    reader.get_tensor(f"{prefix}.scales"),
                    reader.get_tensor(f"{prefix}.g_idx"),
                    bits=4,
                    group_size=32,
                )
                assert bool((weight.zeros == 8).all())
                original_weight = original.get_submodule(prefix).weight.detach()
                if weight.input_perm is not None:
                    original_weight = original_weight[:, weight.input_perm]
                dequantized = weight.dequantize()
                # 4-bit with error feedback: close to, but not equal to, the original
                error = (dequantized - original_weight).norm() / original_weight.norm()
                assert 0.01 < float(error) < 0.3


def test_quantize_refuses_a_non_empty_output(tiny_llama, tmp_path, capsys):
    (tmp_path / "existing").write_text("keep me")
    assert _quantize(tiny_llama, tmp_path) == 2
    assert "is not empty" in capsys.readouterr().err
    assert (tmp_path / "existing").read_text() == "keep me"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--bits", "3"], "`--bits` must be 4 or 8, got 3"),
        (["--group-size", "0"], "`--group-size` must be -1"),
        (["--seq-len", "100000"], "`--seq-len`: window length 100000 exceeds"),
        (["--calibration-samples", "0"], "must be at least 1"),
        (["--method", "awq", "--bits", "8"], "`--method awq` takes no `--bits` other than 4"),
        (["--method", "awq", "--sym"], "no `--act-order` and no `--sym`"),
        (["--method", "awq", "--group-size", "-1"], "`--method awq` needs groups"),
        (
            ["--method", "awq", "--group-size", "48"],
            "group size 48 does not divide self_attn.q_proj's 64 input features, as this layout "
            "needs; pass `--group-size 16` or another divisor",
        ),
    ],
)
def test_quantize_refuses_bad_flags(tiny_llama, tmp_path, capsys, flags, message):
    assert _quantize(tiny_llama, tmp_path / "out", *flags) == 2
    assert message in capsys.readouterr().err


def test_quantize_refuses_an_unwritable_output(tiny_llama, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert _quantize(tiny_llama, blocker / "out") == 2
    assert "cannot create `--output` directory" in capsys.readouterr().err


@pytest.mark.slow
def test_quantize_group_not_dividing_hidden_writes_short_last_groups(tiny_llama, tmp_path, capsys):
    flags = ["--group-size", "48", "--calibration-samples", "2", "--seq-len", "32"]
    assert _quantize(tiny_llama, tmp_path / "out", *flags) == 0
    assert (
        "group size 48 does not divide self_attn.q_proj's 64 input features"
        in capsys.readouterr().err
    )
    with safe_open(str(tmp_path / "out" / "model.safetensors"), framework="pt") as reader:
        prefix = "model.layers.1.mlp.down_proj"  # 128 inputs: groups of 48, 48, 32
        assert reader.get_tensor(f"{prefix}.scales").shape == (3, HIDDEN)
        assert reader.get_tensor(f"{prefix}.qzeros").shape == (3, HIDDEN // 8)
        assert reader.get_tensor(f"{prefix}.qweight").shape == (INTERMEDIATE // 8, HIDDEN)
        g_idx = reader.get_tensor(f"{prefix}.g_idx")
    assert torch.bincount(g_idx.long()).tolist() == [48, 48, 32]


def test_quantize_model_quantizes_linears_in_data_flow_order(tiny_llama):
    from transformers import AutoModelForCausalLM

    from sluice.quantization.gptq_algorithm import GptqParams
    from sluice.quantization.sequential import quantize_model

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    embeddings = model.get_input_embeddings().weight.detach().clone()
    token_ids = torch.randint(0, model.config.vocab_size, (3, 16))
    results = quantize_model(model, token_ids, GptqParams(8, 32))
    blocks = ["self_attn"] * 4 + ["mlp"] * 3
    assert list(results) == [
        f"model.layers.{layer}.{block}.{linear}"
        for layer in range(LAYERS)
        for block, linear in zip(blocks, LINEARS, strict=True)
    ]
    for prefix, result in results.items():  # the model now runs on the quantized weights
        assert torch.equal(model.get_submodule(prefix).weight, result.dequantize())
    assert torch.equal(model.get_input_embeddings().weight, embeddings)


def test_quantize_model_refuses_unknown_architecture(tiny_llama):
    from transformers import AutoModelForCausalLM

    from sluice.quantization.gptq_algorithm import GptqParams
    from sluice.quantization.sequential import quantize_model

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    model.config.model_type = "gpt2"
    with pytest.raises(ValueError, match="model type 'gpt2' is not supported"):
        quantize_model(model, torch.zeros(1, 4, dtype=torch.long), GptqParams())
