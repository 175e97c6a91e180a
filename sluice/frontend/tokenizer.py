"""Loads what the API process needs from a model directory: the tokenizer and the token ids
that end generation."""

import json
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase


def load_tokenizer(model_path: Path, *, trust_remote_code: bool) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)


def eos_token_ids(model_path: Path, tokenizer: PreTrainedTokenizerBase) -> tuple[int, ...]:
    """The tokenizer's EOS plus every id in generation_config.json's `eos_token_id` (Llama 3
    lists several)."""
    ids = {tokenizer.eos_token_id} if isinstance(tokenizer.eos_token_id, int) else set()
    generation_config = model_path / "generation_config.json"
    if generation_config.is_file():
        configured = json.loads(generation_config.read_text()).get("eos_token_id")
        if isinstance(configured, int):
            ids.add(configured)
        elif isinstance(configured, list):
            ids.update(i for i in configured if isinstance(i, int))
    return tuple(sorted(ids))
