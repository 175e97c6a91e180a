"""Writes quantized checkpoints of the embedded SmolLM2 weights for the tests: every decoder
projection quantized min/max style by the tests' reference quantizer and packed as AutoGPTQ or
AutoAWQ would, and beside it a full-precision checkpoint holding exactly the dequantized
weights, what the quantized one must compute."""

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tests.unit.quantization.reference import pack_awq, pack_gptq, quantize_weight

PROJECTION = re.compile(r"model\.layers\.\d+\.(self_attn\.[qkvo]|mlp\.(gate|up|down))_proj\.weight")
SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json")


def write_quantized_pair(
    source: Path,
    quantized_dir: Path,
    dequantized_dir: Path,
    quantization_config: dict[str, object],
) -> None:
    """`quantization_config` as config.json would hold it (quant_method gptq or awq, bits,
    group_size, sym, desc_act)."""
    method = quantization_config["quant_method"]
    bits = int(quantization_config["bits"])  # type: ignore[call-overload]
    group_size = int(quantization_config["group_size"])  # type: ignore[call-overload]
    symmetric = bool(quantization_config.get("sym", method == "gptq"))
    act_order = bool(quantization_config.get("desc_act", False))
    generator = torch.Generator().manual_seed(0)
    orders: dict[str, torch.Tensor] = {}  # projections reading the same input share one order
    quantized: dict[str, torch.Tensor] = {}
    dequantized: dict[str, torch.Tensor] = {}
    for name, tensor in load_file(source / "model.safetensors").items():
        if not PROJECTION.fullmatch(name):
            quantized[name] = dequantized[name] = tensor
            continue
        order = None
        if act_order:
            same_input = re.sub(r"\.(q|k|v|gate|up)_proj\.weight$", ".in", name)
            if same_input not in orders:
                orders[same_input] = torch.randperm(tensor.shape[1], generator=generator)
            order = orders[same_input]
        group = tensor.shape[1] if group_size == -1 else group_size  # -1: per channel
        ref = quantize_weight(
            tensor.float(), bits=bits, group_size=group, symmetric=symmetric, order=order
        )
        prefix = name.removesuffix(".weight")
        parts = pack_gptq(ref, v1=True) if method == "gptq" else pack_awq(ref)
        quantized.update({f"{prefix}.{part}": value for part, value in parts.items()})
        dequantized[name] = ref.dequantize().float()
    config = json.loads((source / "config.json").read_text())
    for directory, tensors, extra in (
        (quantized_dir, quantized, {"quantization_config": quantization_config}),
        (dequantized_dir, dequantized, {"torch_dtype": "float32"}),
    ):
        directory.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
        (directory / "config.json").write_text(json.dumps({**config, **extra}))
        for side in SIDE_FILES:
            if (source / side).exists():
                (directory / side).symlink_to(source / side)
