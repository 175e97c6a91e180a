"""A model split over 2 and 3 gloo shards computes the logits and greedy tokens of the whole
model, float32, on tiny random checkpoints: even and uneven head counts (9 query heads over
3 KV heads, as the default model has), GQA, MQA, biases, untied and tied embeddings, an MLP
width that does not divide by the shards, and quantized layers (GPTQ and AWQ checkpoints,
NF4 quantized at load), each shard holding whole quantization groups."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from sluice.bench.shards import run_on_shards
from sluice.bench.workloads import load_workload
from sluice.distributed.parallel_context import ParallelContext
from sluice.sampling_params import SamplingParams
from sluice.weights.sources import resolve_model
from tests.model.quantized_checkpoints import write_quantized_pair
from tests.model.runner_driver import build_runner, generate, greedy_generate, prefill_logits
from tests.model.tiny_config import TINY

CONFIGS = {
    "gqa-4q-2kv": LlamaConfig(**TINY, tie_word_embeddings=True),
    "uneven-9q-3kv": LlamaConfig(
        **{
            **TINY,
            "hidden_size": 72,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "intermediate_size": 130,
        },
        tie_word_embeddings=True,
    ),
    "wide-9q-3kv": LlamaConfig(
        **{
            **TINY,
            "hidden_size": 576,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "intermediate_size": 256,
        },
        tie_word_embeddings=True,
    ),
    "mqa-6q-1kv-bias": LlamaConfig(
        **{**TINY, "hidden_size": 48, "num_attention_heads": 6, "num_key_value_heads": 1},
        attention_bias=True,
        mlp_bias=True,
        tie_word_embeddings=False,
    ),
}
QUANTIZED = {
    "gptq-4bit-g32": (
        "wide-9q-3kv",
        {"quant_method": "gptq", "bits": 4, "group_size": 32, "sym": True},
    ),
    "awq-4bit-g64": ("wide-9q-3kv", {"quant_method": "awq", "bits": 4, "group_size": 64}),
}
"""Checkpoint -> (the dense one it quantizes, its quantization_config)."""
QUANTIZED_AT_LOAD = {"nf4-at-load": "bitsandbytes-nf4"}
"""Checkpoint -> `--quantize`, for the ones quantized as they load."""
NAMES = sorted([*CONFIGS, *QUANTIZED, *QUANTIZED_AT_LOAD])
PROMPT = torch.randint(0, 256, (40,), generator=torch.Generator().manual_seed(1)).tolist()
NEW_TOKENS = 16
TOLERANCE = 1e-4


def _outputs(parallel: ParallelContext, paths: dict[str, Path]) -> dict[str, dict]:
    """Every checkpoint's prefill logits (whole and in chunks of 7) and greedy tokens, as
    computed by this shard."""
    outputs = {}
    for name, path in paths.items():
        quantize = QUANTIZED_AT_LOAD.get(name)
        runner = build_runner(path, torch.float32, quantize=quantize, parallel=parallel)
        outputs[name] = {
            "logits": prefill_logits(runner, PROMPT),
            "chunked": prefill_logits(runner, PROMPT, chunk=7),
            "greedy": greedy_generate(runner, PROMPT[:5], NEW_TOKENS),
        }
    return outputs


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    paths = {}
    for name, config in CONFIGS.items():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        with torch.no_grad():  # random biases, so that a bias added on every shard shows
            for param_name, param in model.named_parameters():
                if param_name.endswith("bias"):
                    param.normal_(std=0.1)
        paths[name] = tmp_path_factory.mktemp(name)
        model.save_pretrained(paths[name])
    paths["nf4-at-load"] = paths["wide-9q-3kv"]
    for name, (source, quantization_config) in QUANTIZED.items():
        paths[name] = tmp_path_factory.mktemp(name)
        write_quantized_pair(
            paths[source], paths[name], tmp_path_factory.mktemp("unused"), quantization_config
        )
    return paths


@pytest.fixture(scope="module")
def single(checkpoints: dict[str, Path]) -> dict[str, dict]:
    return _outputs(ParallelContext(), checkpoints)


@pytest.fixture(scope="module", params=[2, 3], ids=lambda n: f"{n}-shards")
def sharded(request: pytest.FixtureRequest, checkpoints: dict[str, Path]) -> list[dict]:
    return run_on_shards(request.param, _outputs, checkpoints)


@pytest.mark.parametrize("name", NAMES)
def test_shards_compute_the_whole_models_logits(
    name: str, single: dict[str, dict], sharded: list[dict]
) -> None:
    expected = single[name]
    for rank, outputs in enumerate(sharded):
        for key in ("logits", "chunked"):
            difference = (outputs[name][key] - expected[key]).abs().max().item()
            assert difference < TOLERANCE, f"shard {rank}, {key}: {difference}"


@pytest.mark.parametrize("name", NAMES)
def test_shards_generate_the_whole_models_greedy_tokens(
    name: str, single: dict[str, dict], sharded: list[dict]
) -> None:
    for outputs in sharded:
        assert outputs[name]["greedy"] == single[name]["greedy"]


def _default_model_outputs(parallel: ParallelContext, prompts: list[list[int]]) -> dict:
    """The default model's greedy answers to `prompts` (batched by the scheduler, float32),
    and its GGUF-packed twin's logits over the first prompt."""
    path = resolve_model().path
    runner = build_runner(path, torch.float32, num_blocks=256, parallel=parallel)
    sampling = [SamplingParams(max_new_tokens=128, ignore_eos=True)] * len(prompts)
    greedy = generate(runner, prompts, sampling, run="w1-w3").outputs
    packed = build_runner(path, torch.float32, quantize="gguf", parallel=parallel)
    return {"greedy": greedy, "packed_logits": prefill_logits(packed, prompts[0])}


def test_default_model_on_two_shards_answers_w1_and_w3_as_one() -> None:
    """9 query heads over 3 KV heads, split 5 and 4: token for token as one shard, 128 tokens
    of W1's and W3's prompts; packed GGUF layers (groups of 32) split too."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_model().path)
    texts = [*load_workload("w1").prompts, *load_workload("w3").prompts]
    prompts = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    expected = _default_model_outputs(ParallelContext(), prompts)
    for outputs in run_on_shards(2, _default_model_outputs, prompts):
        assert outputs["greedy"] == expected["greedy"]
        logits, reference = outputs["packed_logits"], expected["packed_logits"]
        assert float((logits - reference).abs().max()) < 1e-4 * float(reference.abs().max())
