"""A model split over 2 and 3 gloo shards computes the logits and greedy tokens of the whole
model, float32, on tiny random checkpoints: even and uneven head counts (9 query heads over
3 KV heads, as the default model has), GQA, MQA, biases, untied and tied embeddings, and an
MLP width that does not divide by the shards."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from sluice.distributed.parallel_context import ParallelContext
from tests.model.runner_driver import build_runner, greedy_generate, prefill_logits
from tests.model.shards import run_on_shards
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
    "mqa-6q-1kv-bias": LlamaConfig(
        **{**TINY, "hidden_size": 48, "num_attention_heads": 6, "num_key_value_heads": 1},
        attention_bias=True,
        mlp_bias=True,
        tie_word_embeddings=False,
    ),
}
PROMPT = torch.randint(0, 256, (40,), generator=torch.Generator().manual_seed(1)).tolist()
NEW_TOKENS = 16
TOLERANCE = 1e-4


def _outputs(parallel: ParallelContext, paths: dict[str, Path]) -> dict[str, dict]:
    """Every checkpoint's prefill logits (whole and in chunks of 7) and greedy tokens, as
    computed by this shard."""
    outputs = {}
    for name, path in paths.items():
        runner = build_runner(path, torch.float32, parallel=parallel)
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
    return paths


@pytest.fixture(scope="module")
def single(checkpoints: dict[str, Path]) -> dict[str, dict]:
    return _outputs(ParallelContext(), checkpoints)


@pytest.fixture(scope="module", params=[2, 3], ids=lambda n: f"{n}-shards")
def sharded(request: pytest.FixtureRequest, checkpoints: dict[str, Path]) -> list[dict]:
    return run_on_shards(request.param, _outputs, checkpoints)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_shards_compute_the_whole_models_logits(
    name: str, single: dict[str, dict], sharded: list[dict]
) -> None:
    expected = single[name]
    for rank, outputs in enumerate(sharded):
        for key in ("logits", "chunked"):
            difference = (outputs[name][key] - expected[key]).abs().max().item()
            assert difference < TOLERANCE, f"shard {rank}, {key}: {difference}"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_shards_generate_the_whole_models_greedy_tokens(
    name: str, single: dict[str, dict], sharded: list[dict]
) -> None:
    for outputs in sharded:
        assert outputs[name]["greedy"] == single[name]["greedy"]
