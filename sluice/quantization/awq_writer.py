"""Writes AWQ results as an AutoAWQ GEMM checkpoint (the layout `awq` reads; AutoAWQ,
transformers and TGI read it too): per quantized linear `qweight` and `qzeros` packed along the
output in AWQ's interleaved order, `scales` fp16, no `weight`; norms the scale search changed;
config.json with `quantization_config` (see `checkpoint_writer`)."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import torch

from sluice.quantization.awq import AWQ_UNPACK_ORDER, BITS
from sluice.quantization.checkpoint_writer import write_checkpoint
from sluice.quantization.gptq_algorithm import GptqResult
from sluice.quantization.packing import pack_columns

PER_WORD: Final = 32 // BITS
# Slot i of a word holds column AWQ_PACK_ORDER[i] of its eight: the inverse of AWQ_UNPACK_ORDER.
AWQ_PACK_ORDER: Final = tuple(AWQ_UNPACK_ORDER.index(slot) for slot in range(PER_WORD))


def awq_tensors(prefix: str, result: GptqResult) -> dict[str, torch.Tensor]:
    """One linear's three GEMM tensors, named `<prefix>.qweight` and so on."""
    if result.bits != BITS:
        raise ValueError(f"AWQ checkpoints hold {BITS}-bit weights, not {result.bits}-bit")
    if not torch.equal(result.g_idx.long(), torch.arange(result.q.shape[1]) // result.group_size):
        raise ValueError("AWQ checkpoints hold groups in input order (no act-order)")
    return {
        f"{prefix}.qweight": _pack_interleaved(result.q.t()),  # [in, out / 8]
        f"{prefix}.qzeros": _pack_interleaved(result.zeros),  # [groups, out / 8]
        f"{prefix}.scales": result.scales.half().contiguous(),  # [groups, out]
    }


def quantization_config(group_size: int) -> dict[str, Any]:
    """config.json's `quantization_config`, as transformers and TGI read AutoAWQ's."""
    return {
        "quant_method": "awq",
        "bits": BITS,
        "group_size": group_size,
        "zero_point": True,
        "version": "gemm",
        "modules_to_not_convert": None,
    }


def write_awq_checkpoint(
    source: Path,
    output: Path,
    results: Mapping[str, GptqResult],
    rescaled: Mapping[str, torch.Tensor],
    group_size: int,
) -> None:
    """Write the AWQ checkpoint of the model in `source` to `output`, an existing directory:
    `results` keyed by linear prefix, `rescaled` the changed norm weights by tensor name."""
    write_checkpoint(
        source,
        output,
        {prefix: awq_tensors(prefix, result) for prefix, result in results.items()},
        quantization_config(group_size),
        replaced=rescaled,
    )


def _pack_interleaved(values: torch.Tensor) -> torch.Tensor:
    """[rows, cols] -> [rows, cols / 8] int32 in AWQ's slot order."""
    rows, cols = values.shape
    ordered = values.reshape(rows, cols // PER_WORD, PER_WORD)[:, :, list(AWQ_PACK_ORDER)]
    return pack_columns(ordered.reshape(rows, cols), BITS)
