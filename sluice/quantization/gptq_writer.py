"""Writes GPTQ results as a standard AutoGPTQ v1 checkpoint (the layout `gptq` reads; AutoGPTQ,
GPTQModel and TGI read it too): per quantized linear `qweight`, `qzeros` (z - 1), `scales`,
`g_idx` and no `weight`; every other tensor copied unchanged; config.json with
`quantization_config` and quantize_config.json (see `checkpoint_writer`).

v1 stores z - 1 in b bits. AutoGPTQ's own packer wrote z = 0 as -1, spilling into the
neighbouring zeros' bits; we store (z - 1) mod 2**b, which `gptq` reads back exactly. A reader that
adds 1 without masking would see 2**b for z = 0, which only an asymmetric group whose values are
all >= 0 produces; symmetric grids always have z = 2**(b-1)."""

from collections.abc import Mapping
from pathlib import Path

import torch

from sluice.quantization.checkpoint_writer import write_checkpoint
from sluice.quantization.gptq import GptqCheckpointFormat
from sluice.quantization.gptq_algorithm import GptqParams, GptqResult
from sluice.quantization.packing import pack_columns, pack_rows


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
        "clip_search": params.clip_search,
        "true_sequential": True,
        "static_groups": False,
        "checkpoint_format": str(GptqCheckpointFormat.V1),
    }


def write_gptq_checkpoint(
    source: Path, output: Path, results: Mapping[str, GptqResult], params: GptqParams
) -> None:
    """Write the GPTQ checkpoint of the model in `source` (Hugging Face layout) to `output`,
    an existing directory. `results` is keyed by linear prefix (`model.layers.0.mlp.up_proj`)."""
    config = quantization_config(params)
    write_checkpoint(
        source,
        output,
        {prefix: gptq_tensors(prefix, result) for prefix, result in results.items()},
        config,
        extra_json={"quantize_config.json": config | {"model_file_base_name": "model"}},
    )
