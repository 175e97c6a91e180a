"""Writes GPTQ results as a standard AutoGPTQ v1 checkpoint (the layout `gptq` reads; AutoGPTQ,
GPTQModel and TGI read it too): per quantized linear `qweight`, `qzeros` (z - 1), `scales`,
`g_idx` and no `weight`; every other tensor copied unchanged; config.json with
`quantization_config`, quantize_config.json, and the source's tokenizer and generation files.

v1 stores z - 1 in b bits. AutoGPTQ's own packer wrote z = 0 as -1, spilling into the
neighbouring zeros' bits; we store (z - 1) mod 2**b, which `gptq` reads back exactly. A reader that
adds 1 without masking would see 2**b for z = 0, which only an asymmetric group whose values are
all >= 0 produces; symmetric grids always have z = 2**(b-1)."""

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sluice.quantization.gptq import GptqCheckpointFormat
from sluice.quantization.gptq_algorithm import GptqParams, GptqResult

WEIGHTS_FILE: Final = "model.safetensors"
# Files of the source checkpoint that the quantized one replaces or must not carry.
_NOT_COPIED_SUFFIXES: Final = (".safetensors", ".safetensors.index.json", ".bin", ".pt", ".gguf")
_NOT_COPIED_NAMES: Final = frozenset({"config.json", "quantize_config.json"})


def _pack_factor(bits: int) -> int:
    if bits not in (4, 8):
        raise ValueError(f"cannot pack {bits}-bit values (only 4 and 8)")
    return 32 // bits


def _to_int32_words(words: torch.Tensor) -> torch.Tensor:
    """int64 words in [0, 2**32) -> int32 with the same bits (two's complement)."""
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def pack_rows(values: torch.Tensor, bits: int) -> torch.Tensor:
    """[rows, cols] ints in [0, 2**bits) -> [rows / p, cols] int32: row r * p + j in slot j."""
    per_word = _pack_factor(bits)
    rows, cols = values.shape
    if rows % per_word:
        raise ValueError(f"{rows} rows do not pack into words of {per_word}")
    grouped = values.long().reshape(rows // per_word, per_word, cols)
    shifts = torch.arange(0, 32, bits, dtype=torch.int64).view(1, -1, 1)
    return _to_int32_words((grouped << shifts).sum(dim=1))


def pack_columns(values: torch.Tensor, bits: int) -> torch.Tensor:
    """[rows, cols] ints in [0, 2**bits) -> [rows, cols / p] int32: column c * p + j in slot j."""
    per_word = _pack_factor(bits)
    rows, cols = values.shape
    if cols % per_word:
        raise ValueError(f"{cols} columns do not pack into words of {per_word}")
    grouped = values.long().reshape(rows, cols // per_word, per_word)
    shifts = torch.arange(0, 32, bits, dtype=torch.int64)
    return _to_int32_words((grouped << shifts).sum(dim=2))


def gptq_tensors(prefix: str, result: GptqResult) -> dict[str, torch.Tensor]:
    """One linear's four v1 checkpoint tensors, named `<prefix>.qweight` and so on."""
    mask = (1 << result.bits) - 1
    return {
        f"{prefix}.qweight": pack_rows(result.q.t(), result.bits),  # [in / p, out]
        f"{prefix}.qzeros": pack_columns((result.zeros - 1) & mask, result.bits),
        f"{prefix}.scales": result.scales.half().contiguous(),  # [groups, out]
        f"{prefix}.g_idx": result.g_idx.to(torch.int32).contiguous(),  # [in]
    }


def quantization_config(params: GptqParams) -> dict[str, object]:
    """config.json's `quantization_config`, as transformers/optimum and TGI read it."""
    return {
        "quant_method": "gptq",
        "bits": params.bits,
        "group_size": params.group_size,
        "desc_act": params.desc_act,
        "sym": params.sym,
        "damp_percent": params.damp_percent,
        "true_sequential": True,
        "static_groups": False,
        "checkpoint_format": str(GptqCheckpointFormat.V1),
    }


def write_gptq_checkpoint(
    source: Path, output: Path, results: Mapping[str, GptqResult], params: GptqParams
) -> None:
    """Write the quantized checkpoint of the model in `source` (Hugging Face layout) to `output`,
    an existing directory. `results` is keyed by linear prefix (`model.layers.0.mlp.up_proj`)."""
    tensors = _read_tensors(source)
    for prefix, result in results.items():
        if tensors.pop(f"{prefix}.weight", None) is None:
            raise ValueError(f"the checkpoint in {source} has no tensor {prefix}.weight")
        tensors.update(gptq_tensors(prefix, result))
    weights = output / WEIGHTS_FILE
    save_file({name: t.contiguous() for name, t in tensors.items()}, weights, {"format": "pt"})
    # save_file creates the file private (0600); make it as readable as the source's weights
    shutil.copymode(next(source.glob("*.safetensors")), weights)
    config = json.loads((source / "config.json").read_text())
    config["quantization_config"] = quantization_config(params)
    (output / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    quantize_config = quantization_config(params) | {"model_file_base_name": "model"}
    (output / "quantize_config.json").write_text(json.dumps(quantize_config, indent=2) + "\n")
    for path in sorted(source.iterdir()):
        if _is_copied(path):
            shutil.copy2(path, output / path.name)


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
