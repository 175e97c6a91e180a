"""Which quantization a served model uses: read from the checkpoint's `quantization_config`
(GPTQ, AWQ) or chosen with `--quantize` for quantizing full-precision weights at load
(bitsandbytes and eetq: int8 per output channel; bitsandbytes-nf4/-fp4: 4-bit codebooks in
blocks of 64; fp8: e4m3 per output channel) or for serving a GGUF's Q4_0/Q4_1/Q8_0 blocks as
they are (gguf, sluice's own), checked against each other, and the linear method that runs it.

A quantized checkpoint is never served as if it were full precision, and a `--quantize` that
contradicts the checkpoint is refused, each with a message saying what to pass."""

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch

from sluice.errors import ConfigError
from sluice.model.layers.linear import LinearMethod
from sluice.quantization.fp8 import Fp8LinearMethod
from sluice.quantization.gguf_blocks import BLOCK
from sluice.quantization.gptq import GptqCheckpointFormat
from sluice.quantization.int4_linear import Int4LinearMethod
from sluice.quantization.int8_linear import Int8LinearMethod
from sluice.quantization.nf4 import Nf4LinearMethod
from sluice.quantization.rtn import Int8OnTheFlyLinearMethod
from sluice.weights.gguf_linears import gguf_linear_types
from sluice.weights.quantization_config import declared_quantization

FROM_CHECKPOINT: Final = ("gptq", "awq")
"""Methods whose integers come from a pre-quantized checkpoint."""
GGUF: Final = "gguf"
"""sluice's method for a GGUF's own Q4_0, Q4_1 and Q8_0 blocks, served packed."""


@dataclass(frozen=True, slots=True)
class QuantizationScheme:
    method: str
    """TGI's `--quantize` name."""
    bits: int
    group_size: int
    """Input features per group; -1 for one group per output channel."""
    desc_act: bool = False
    """GPTQ act-order: the checkpoint's groups are not contiguous in input order."""
    sym: bool = True
    checkpoint_format: GptqCheckpointFormat = GptqCheckpointFormat.V1
    kernel_dtype: torch.dtype | None = None
    """The activations' dtype inside the packed int4/int8 kernels; None: the model's dtype
    (see `sluice.quantization.kernel_dtype`)."""

    @property
    def split_unit(self) -> int:
        """Input features a tensor-parallel split keeps together: a quantization group."""
        return self.group_size if self.group_size > 0 else 1

    @property
    def is_pre_quantized(self) -> bool:
        return self.method in FROM_CHECKPOINT

    def linear_method(self) -> LinearMethod:
        """A fresh method for one linear layer."""
        if self.method in ("bitsandbytes", "eetq"):
            return Int8OnTheFlyLinearMethod(self.kernel_dtype)
        if self.method in ("bitsandbytes-nf4", "bitsandbytes-fp4"):
            return Nf4LinearMethod("nf4" if self.method.endswith("nf4") else "fp4")
        if self.method == "fp8":
            return Fp8LinearMethod()
        group_size = None if self.group_size == -1 else self.group_size
        if self.bits == 4:
            return Int4LinearMethod(
                group_size, has_input_perm=self.desc_act, kernel_dtype=self.kernel_dtype
            )
        return Int8LinearMethod(
            group_size,
            symmetric=self.sym,
            has_input_perm=self.desc_act,
            kernel_dtype=self.kernel_dtype,
        )


ON_THE_FLY: Final = {
    scheme.method: scheme
    for scheme in (
        QuantizationScheme("bitsandbytes", 8, -1),
        QuantizationScheme("eetq", 8, -1),
        QuantizationScheme("bitsandbytes-nf4", 4, 64),
        QuantizationScheme("bitsandbytes-fp4", 4, 64),
        QuantizationScheme("fp8", 8, -1),
    )
}
"""Methods that quantize full-precision weights at load, by TGI's name."""


def packed_kernel_dtype(
    requested_dtype: str | None, dtype: torch.dtype, device: torch.device
) -> torch.dtype | None:
    """The activations' dtype for the packed int4/int8 kernels, given `--dtype` (None when not
    given) and the dtype it resolved to; None: the model's.

    torch's CPU weight-only int4 and int8 kernels are vectorised for bfloat16 activations and
    take a scalar path for float32 ones, 10 to 100 times slower than a dense matmul (on AVX2
    and AVX-512 CPUs alike: bench/results/quantized_kernel_dtype.md), so in float32 the packed
    layers multiply by their weights dequantized chunk by chunk instead, still 3-13x slower
    than the bfloat16 kernel at one token. So where float32 is only the default (CPUs without
    native bf16), the packed layers compute in bfloat16, converting at their edges, and every
    other layer in float32; `--dtype float32` asked for keeps them in float32."""
    if device.type == "cpu" and requested_dtype is None and dtype == torch.float32:
        return torch.bfloat16
    return None


def resolve_scheme(
    requested: str | None, model_path: Path, *, kernel_dtype: torch.dtype | None = None
) -> QuantizationScheme | None:
    """The scheme to serve `model_path` with, given `--quantize` (None: from the checkpoint),
    its packed kernels computing in `kernel_dtype` (see `packed_kernel_dtype`)."""
    scheme = _resolve_scheme(requested, model_path)
    return None if scheme is None else dataclasses.replace(scheme, kernel_dtype=kernel_dtype)


def _resolve_scheme(requested: str | None, model_path: Path) -> QuantizationScheme | None:
    declared = declared_quantization(model_path)
    if declared is not None and requested is not None and requested != declared:
        raise ConfigError(
            f"`--quantize {requested}` contradicts the checkpoint, which is quantized with "
            f"{declared}; pass `--quantize {declared}` or leave it out"
        )
    if declared is not None:
        if declared not in FROM_CHECKPOINT:
            raise ConfigError(
                f"the checkpoint is quantized with {declared}, which this server cannot run "
                f"yet; it serves {', '.join(FROM_CHECKPOINT)} checkpoints"
            )
        return _checkpoint_scheme(declared, model_path)
    if requested is None:
        return None
    if requested == GGUF:
        return _gguf_scheme(model_path)
    if requested in FROM_CHECKPOINT:
        raise ConfigError(
            f"`--quantize {requested}` needs a checkpoint quantized with {requested}, and this "
            f"one is full precision: make one with `sluice quantize`, or quantize at load "
            f"with {_on_the_fly_choices()}"
        )
    scheme = ON_THE_FLY.get(requested)
    if scheme is None:
        raise ConfigError(f"`--quantize {requested}` is not supported by this server yet")
    return scheme


def _checkpoint_scheme(method: str, model_path: Path) -> QuantizationScheme:
    section = _quantization_section(model_path)
    bits = int(section.get("bits", section.get("w_bit", 4)))
    group_size = int(section.get("group_size", section.get("q_group_size", 128)))
    if method == "awq":
        if str(section.get("version", "gemm")).lower() != "gemm":
            raise ConfigError(
                f"AWQ version {section.get('version')!r} is not supported; sluice reads AWQ's "
                "GEMM layout"
            )
        if bits != 4 or not section.get("zero_point", True):
            raise ConfigError("sluice reads 4-bit AWQ checkpoints with zero points only")
        return QuantizationScheme("awq", 4, group_size, sym=False)
    if bits not in (4, 8):
        raise ConfigError(f"GPTQ with {bits} bits is not supported; sluice reads 4 and 8 bits")
    checkpoint_format = str(section.get("checkpoint_format", GptqCheckpointFormat.V1))
    try:
        gptq_format = GptqCheckpointFormat(checkpoint_format)
    except ValueError:
        raise ConfigError(
            f"GPTQ checkpoint_format {checkpoint_format!r} is not supported; sluice reads "
            f"{', '.join(f.value for f in GptqCheckpointFormat)}"
        ) from None
    return QuantizationScheme(
        "gptq",
        bits,
        group_size,
        desc_act=bool(section.get("desc_act", False)),
        sym=bool(section.get("sym", True)),
        checkpoint_format=gptq_format,
    )


def _gguf_scheme(model_path: Path) -> QuantizationScheme:
    found = gguf_linear_types(model_path)
    if found is None:
        raise ConfigError(
            f"`--quantize {GGUF}` serves the block-quantized linears of a GGUF model, and "
            f"{model_path} was not converted from a GGUF file: pass a .gguf `--model-id`"
        )
    types, skipped = found
    if skipped:
        name, kind = next(iter(skipped.items()))
        raise ConfigError(
            f"`--quantize {GGUF}` runs Q4_0, Q4_1 and Q8_0 linears, and {len(skipped)} of this "
            f"GGUF's are not (e.g. {name}: {kind}); leave `--quantize` out to serve it "
            "dequantized"
        )
    bits = {ggml_type.bits for ggml_type in types}
    if len(bits) != 1:
        raise ConfigError(
            f"`--quantize {GGUF}` needs the GGUF's linears all 4-bit or all 8-bit, and this one "
            f"mixes {', '.join(sorted(t.name for t in types))}; leave `--quantize` out to serve "
            "it dequantized"
        )
    return QuantizationScheme(GGUF, bits.pop(), BLOCK, sym=True)


def _quantization_section(model_path: Path) -> dict[str, Any]:
    config = json.loads((model_path / "config.json").read_text())
    section = config.get("quantization_config") or {}
    return section if isinstance(section, dict) else {}


def _on_the_fly_choices() -> str:
    return " or ".join(f"`--quantize {name}`" for name in ON_THE_FLY) or "nothing yet"
