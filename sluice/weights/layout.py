"""Checks that a directory is a usable model in Hugging Face layout: config.json with a model
type, safetensors weights (one file or shards named by an index) and a tokenizer. Reads only
small metadata files; never loads tensors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from sluice.errors import ModelLoadError
from sluice.weights.safetensors_reader import checkpoint_files

TOKENIZER_FILES: Final = ("tokenizer.json", "tokenizer.model")
"""Either one is enough for transformers' AutoTokenizer to build a fast tokenizer."""


def validate_model_dir(path: Path, model_id: str) -> None:
    """Raise ModelLoadError naming model_id and path unless path is a complete model directory."""
    if not path.is_dir():
        raise ModelLoadError(f"model {model_id}: {path} is not a directory")
    _check_config(path, model_id)
    _check_weights(path, model_id)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(
            f"model {model_id}: no tokenizer in {path} (expected tokenizer.json or "
            "tokenizer.model); copy the tokenizer files of the base model next to config.json"
        )


def _check_config(path: Path, model_id: str) -> None:
    """config.json must exist and be a JSON object with a model_type."""
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(
            f"model {model_id}: no config.json in {path}; "
            "point --model-id at a Hugging Face model directory, a .gguf file or a Hub repo id"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelLoadError(f"model {model_id}: cannot read {config_path}: {reason}") from e
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise ModelLoadError(
            f"model {model_id}: {config_path} is not a transformers model config "
            "(a JSON object with a model_type)"
        )


def _check_weights(path: Path, model_id: str) -> None:
    """The directory must hold safetensors weights; name the other formats it holds instead."""
    try:
        checkpoint_files(path)
    except ModelLoadError as e:
        other = sorted({p.suffix for p in path.iterdir() if p.suffix in {".bin", ".pt", ".pth"}})
        hint = f" (found {', '.join(other)} files: convert them to safetensors)" if other else ""
        raise ModelLoadError(f"model {model_id}: {e}{hint}") from e
