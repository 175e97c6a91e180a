"""DESIGN's correctness anchor: on the embedded SmolLM2 weights our model matches transformers
in float32 (logits within 1e-3, identical greedy tokens for 64 steps)."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sluice.weights.sources import resolve_model
from tests.model.runner_driver import build_runner, greedy_generate, prefill_logits

PROMPTS = [
    "What is a sluice?",
    "Write a short poem about rivers.",
    "List three prime numbers and explain why they are prime.",
]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return resolve_model().path


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def _chat_ids(model_dir: Path, prompt: str) -> list[int]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
    )["input_ids"]


@pytest.mark.slow
def test_default_model_logits_match_transformers(model_dir: Path, reference: torch.nn.Module):
    runner = build_runner(model_dir, torch.float32)
    prompt = _chat_ids(model_dir, PROMPTS[0])
    with torch.no_grad():
        expected = reference(torch.tensor([prompt])).logits[0]
    assert (prefill_logits(runner, prompt) - expected).abs().max().item() < 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("prompt", PROMPTS)
def test_default_model_greedy_tokens_match_transformers(
    model_dir: Path, reference: torch.nn.Module, prompt: str
) -> None:
    runner = build_runner(model_dir, torch.float32)
    prompt_ids = _chat_ids(model_dir, prompt)
    assert greedy_generate(runner, prompt_ids, 64) == _reference_greedy(reference, prompt_ids, 64)


def _reference_greedy(model: torch.nn.Module, prompt_ids: list[int], count: int) -> list[int]:
    """Plain argmax decoding with transformers' KV cache, EOS not special."""
    tokens: list[int] = []
    cache = None
    step_input = torch.tensor([prompt_ids])
    with torch.no_grad():
        for _ in range(count):
            out = model(step_input, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            tokens.append(int(out.logits[0, -1].argmax()))
            step_input = torch.tensor([[tokens[-1]]])
    return tokens
