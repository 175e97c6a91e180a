"""A GGUF's block-quantized decoder linears, kept beside its dequantized conversion so that
`--quantize gguf` can serve them on packed kernels instead of the dense weights.

At conversion, every decoder linear stored as Q4_0, Q4_1 or Q8_0 is written, as the GGUF's raw
bytes row by row (output features in Hugging Face order), to `gguf_linears/linears.safetensors`
in the converted directory: `<prefix>.gguf_blocks` uint8 and `<prefix>.gguf_type` (ggml's type
number). Each is checked against the dequantized weight transformers produced, so the rows are
known to be in the right order. Linears of other types (K-quants, F16) are listed as skipped.
A subdirectory, so that readers of the directory's top-level `*.safetensors` never see it."""

import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sluice.quantization.gguf_blocks import GgmlType, convert_gguf_blocks
from sluice.weights.safetensors_reader import iter_checkpoint_tensors

logger = logging.getLogger(__name__)

LINEARS_FILE: Final = Path("gguf_linears") / "linears.safetensors"
BLOCKS_PART: Final = "gguf_blocks"
TYPE_PART: Final = "gguf_type"

_LINEAR_NAMES: Final = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
"""llama.cpp's names for a Llama-family decoder layer's linears, and Hugging Face's."""


def write_gguf_linears(
    gguf_path: Path, out_dir: Path, dense: Mapping[str, torch.Tensor], config: Any
) -> None:
    """Write the packed linears of gguf_path; `dense`: the converted state dict, by HF name."""
    from gguf import GGUFReader

    tensors: dict[str, torch.Tensor] = {}
    skipped: dict[str, str] = {}
    for tensor in GGUFReader(str(gguf_path)).tensors:
        prefix = _hf_linear_prefix(tensor.name)
        if prefix is None:
            continue
        type_name = tensor.tensor_type.name
        if type_name not in GgmlType.__members__:
            skipped[prefix] = type_name
            continue
        ggml_type = GgmlType[type_name]
        raw = torch.from_numpy(tensor.data.copy()).reshape(tensor.data.shape[0], -1)
        rows = _rows_matching(raw, ggml_type, dense[f"{prefix}.weight"], prefix, config)
        if rows is None:
            skipped[prefix] = f"{type_name} in an unknown row order"
            continue
        tensors[f"{prefix}.{BLOCKS_PART}"] = raw[rows].contiguous()
        tensors[f"{prefix}.{TYPE_PART}"] = torch.tensor(int(ggml_type))
    if skipped:
        logger.info(
            "%d linears of %s are not Q4_0/Q4_1/Q8_0 (e.g. %s: %s); `--quantize gguf` will "
            "refuse this model",
            len(skipped),
            gguf_path.name,
            *next(iter(skipped.items())),
        )
    path = out_dir / LINEARS_FILE
    path.parent.mkdir()
    save_file(tensors, str(path), metadata={"skipped": json.dumps(skipped)})


def gguf_linear_types(model_path: Path) -> tuple[set[GgmlType], dict[str, str]] | None:
    """The block types of the packed linears, and the linears left out with their types;
    None when model_path is not a converted GGUF."""
    path = model_path / LINEARS_FILE
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as reader:
        skipped = json.loads((reader.metadata() or {}).get("skipped", "{}"))
        types = {
            GgmlType(int(reader.get_tensor(name)))
            for name in reader.keys()  # noqa: SIM118 - safe_open is not a mapping
            if name.endswith(f".{TYPE_PART}")
        }
    return types, skipped


def iter_gguf_packed_tensors(model_path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """The converted checkpoint's tensors with each packed linear's dense `weight` replaced by
    its `gguf_blocks` and `gguf_type`."""
    with safe_open(str(model_path / LINEARS_FILE), framework="pt") as reader:
        names = list(reader.keys())  # noqa: SIM118 - safe_open is not a mapping
        packed = {name.rpartition(".")[0] for name in names}
        yield from iter_checkpoint_tensors(
            model_path, include=lambda name: name.removesuffix(".weight") not in packed
        )
        for name in names:
            yield name, reader.get_tensor(name)


def _hf_linear_prefix(gguf_name: str) -> str | None:
    parts = gguf_name.split(".")
    if len(parts) != 4 or parts[0] != "blk" or parts[3] != "weight":
        return None
    module = _LINEAR_NAMES.get(parts[2])
    return None if module is None else f"model.layers.{parts[1]}.{module}"


def _rows_matching(
    raw: torch.Tensor, ggml_type: GgmlType, dense: torch.Tensor, prefix: str, config: Any
) -> torch.Tensor | None:
    """The row order that makes raw dequantize to `dense`: as stored, or with llama.cpp's
    rotary permutation of q and k undone (what transformers does on load), or None."""
    values = convert_gguf_blocks(raw, ggml_type).dequantize()
    candidates = [torch.arange(raw.shape[0])]
    heads = {
        "self_attn.q_proj": config.num_attention_heads,
        "self_attn.k_proj": getattr(config, "num_key_value_heads", config.num_attention_heads),
    }.get(prefix.split(".", 3)[3])
    if heads is not None:
        candidates.append(_undo_rotary_permutation(raw.shape[0], heads))
    tolerance = 1e-5 * float(dense.abs().max()) + 1e-30
    for rows in candidates:
        if float((values[rows] - dense.float()).abs().max()) <= tolerance:
            return rows
    return None


def _undo_rotary_permutation(num_rows: int, num_heads: int) -> torch.Tensor:
    """Row indices that undo llama.cpp's per-head interleaving of rotary halves."""
    rows = torch.arange(num_rows).reshape(num_heads, num_rows // num_heads // 2, 2)
    return rows.transpose(1, 2).reshape(num_rows)
