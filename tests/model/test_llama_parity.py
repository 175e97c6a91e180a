"""Our Llama-family model against transformers on tiny random checkpoints, float32."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

from tests.model.runner_driver import build_runner, greedy_generate, prefill_logits
from tests.model.tiny_config import TINY

CONFIGS = {
    "llama-tied": LlamaConfig(**TINY, tie_word_embeddings=True),
    "llama-bias": LlamaConfig(**TINY, attention_bias=True, mlp_bias=True),
    "llama3-rope-scaling": LlamaConfig(
        **TINY,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    ),
    "qwen2": Qwen2Config(**TINY, tie_word_embeddings=False),
}


def _save_random_checkpoint(config: LlamaConfig | Qwen2Config, path: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    reference = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # random biases, so that a dropped bias shows
        for name, param in reference.named_parameters():
            if name.endswith("bias"):
                param.normal_(std=0.1)
    reference.save_pretrained(path)
    return reference.eval()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_llama_logits_match_transformers(name: str, tmp_path: Path) -> None:
    reference = _save_random_checkpoint(CONFIGS[name], tmp_path)
    runner = build_runner(tmp_path, torch.float32)
    prompt = torch.randint(0, 256, (40,), generator=torch.Generator().manual_seed(1)).tolist()
    with torch.no_grad():
        expected = reference(torch.tensor([prompt])).logits[0]
    ours = prefill_logits(runner, prompt)
    assert (ours - expected).abs().max().item() < 1e-4
    # Chunked prefill over the paged cache gives the same logits as one pass.
    chunked = prefill_logits(runner, prompt, chunk=7)
    assert (chunked - expected).abs().max().item() < 1e-4


def test_llama_greedy_tokens_match_transformers(tmp_path: Path) -> None:
    reference = _save_random_checkpoint(CONFIGS["llama-tied"], tmp_path)
    runner = build_runner(tmp_path, torch.float32)
    prompt = [5, 17, 99, 3, 42]
    expected = reference.generate(
        torch.tensor([prompt]), max_new_tokens=32, do_sample=False, eos_token_id=None
    )[0, len(prompt) :].tolist()
    assert greedy_generate(runner, prompt, 32) == expected
