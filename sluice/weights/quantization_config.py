"""Which quantization scheme a checkpoint declares in config.json, by TGI's mapping."""

import json
from pathlib import Path
from typing import Final

# config.json `quant_method` -> TGI's --quantize name (contract 3.4).
QUANT_METHOD_NAMES: Final = {
    "gptq": "gptq",
    "awq": "awq",
    "exl2": "exl2",
    "fp8": "fp8",
    "fbgemm_fp8": "fp8",
    "compressed-tensors": "compressed-tensors",
    "bitsandbytes": "bitsandbytes",
}


def declared_quantization(model_path: Path) -> str | None:
    """The --quantize name matching the checkpoint's `quantization_config` (or
    `compression_config`), or None for a full-precision checkpoint."""
    config = json.loads((model_path / "config.json").read_text())
    section = config.get("quantization_config") or config.get("compression_config")
    if not isinstance(section, dict):
        return None
    method = str(section.get("quant_method", "unknown"))
    if method == "bitsandbytes" and section.get("load_in_4bit"):
        return f"bitsandbytes-{section.get('bnb_4bit_quant_type', 'nf4')}"
    return QUANT_METHOD_NAMES.get(method, method)
