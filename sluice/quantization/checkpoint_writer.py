"""Writes a quantized checkpoint beside its source in Hugging Face layout: the source's tensors
with each quantized linear's `weight` replaced by its format's tensors (and some full-precision
tensors replaced, e.g. norms AWQ rescaled), config.json with the `quantization_config`, and the
source's tokenizer and generation files. The format (GPTQ, AWQ) decides the tensors and config."""

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import torch
from safetensors import safe_open
from safetensors.torch import save_file

WEIGHTS_FILE: Final = "model.safetensors"
# Files of the source checkpoint that the quantized one replaces or must not carry.
_NOT_COPIED_SUFFIXES: Final = (".safetensors", ".safetensors.index.json", ".bin", ".pt", ".gguf")
_NOT_COPIED_NAMES: Final = frozenset({"config.json", "quantize_config.json"})


def write_checkpoint(
    source: Path,
    output: Path,
    linears: Mapping[str, Mapping[str, torch.Tensor]],
    quantization_config: Mapping[str, Any],
    *,
    replaced: Mapping[str, torch.Tensor] | None = None,
    extra_json: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Write the quantized checkpoint of the model in `source` to `output`, an existing directory.

    `linears`: per linear prefix (`model.layers.0.mlp.up_proj`), the tensors that replace its
    `weight`; `replaced`: full-precision tensors by name whose values change (same shape, cast
    to the source's dtype); `extra_json`: further JSON files by name."""
    tensors = _read_tensors(source)
    for prefix, quantized in linears.items():
        if tensors.pop(f"{prefix}.weight", None) is None:
            raise ValueError(f"the checkpoint in {source} has no tensor {prefix}.weight")
        tensors.update(quantized)
    for name, value in (replaced or {}).items():
        original = tensors.get(name)
        if original is None or original.shape != value.shape:
            raise ValueError(f"the checkpoint in {source} has no {tuple(value.shape)} {name}")
        tensors[name] = value.to(original.dtype)
    weights = output / WEIGHTS_FILE
    save_file({name: t.contiguous() for name, t in tensors.items()}, weights, {"format": "pt"})
    # save_file creates the file private (0600); make it as readable as the source's weights
    shutil.copymode(next(source.glob("*.safetensors")), weights)
    config = json.loads((source / "config.json").read_text())
    config["quantization_config"] = dict(quantization_config)
    _write_json(output / "config.json", config)
    for name, content in (extra_json or {}).items():
        _write_json(output / name, content)
    for path in sorted(source.iterdir()):
        if _is_copied(path):
            shutil.copy2(path, output / path.name)


def _write_json(path: Path, content: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2) + "\n")


def _read_tensors(source: Path) -> dict[str, torch.Tensor]:
    files = sorted(source.glob("*.safetensors"))
    if not files:
        raise ValueError(f"no .safetensors weights in {source}")
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as reader:
            for name in reader.keys():  # noqa: SIM118 (safe_open is not a mapping)
                tensors[name] = reader.get_tensor(name)
    return tensors


def _is_copied(path: Path) -> bool:
    return (
        path.is_file()
        and not path.name.startswith(".")
        and path.name not in _NOT_COPIED_NAMES
        and not path.name.endswith(_NOT_COPIED_SUFFIXES)
    )
