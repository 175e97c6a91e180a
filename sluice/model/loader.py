"""Builds the model for a local checkpoint directory on a device, in a dtype, for one shard."""

import logging
import time
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, PretrainedConfig

from sluice.cpu import has_native_bf16
from sluice.distributed.parallel_context import ParallelContext
from sluice.errors import ModelLoadError
from sluice.model.attention.backend import AttentionBackend
from sluice.model.kernel_packing import pack_dense_weights, packs_weights
from sluice.model.models.registry import model_class_for
from sluice.quantization.scheme import GGUF, QuantizationScheme
from sluice.weights.gguf_linears import iter_gguf_packed_tensors
from sluice.weights.safetensors_reader import iter_checkpoint_tensors

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """The requested dtype, or the fastest correct one for the device."""
    if name is not None:
        return DTYPES[name]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if has_native_bf16() else torch.float32


def read_hf_config(path: Path, *, trust_remote_code: bool = False) -> PretrainedConfig:
    """The checkpoint's config; its own Python code runs only with `trust_remote_code`."""
    return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)


def load_model(
    path: Path,
    config: PretrainedConfig,
    *,
    dtype: torch.dtype,
    device: torch.device,
    parallel: ParallelContext,
    backend: AttentionBackend,
    quantization: QuantizationScheme | None = None,
    pack_weights: bool = True,
) -> nn.Module:
    """Instantiate the checkpoint's architecture on `device` and load this shard's weights,
    its linear layers quantized by `quantization` if given, its dense weights packed for the
    C++ linear kernel where it serves (model/kernel_packing.py; `pack_weights=False`: as
    loaded, to measure against)."""
    started = time.perf_counter()
    try:
        model_class = model_class_for(config.architectures)
        with torch.device(device):
            model = model_class(
                config, parallel=parallel, backend=backend, dtype=dtype, quantization=quantization
            )
    except ValueError as error:
        raise ModelLoadError(
            f"cannot build the model that {path / 'config.json'} describes: {error}"
        ) from error
    is_gguf = quantization is not None and quantization.method == GGUF
    tensors = iter_gguf_packed_tensors(path) if is_gguf else iter_checkpoint_tensors(path)
    try:
        model.load_weights(tensors)  # type: ignore[operator]
    except (ValueError, RuntimeError) as error:
        raise ModelLoadError(
            f"cannot load the weights in {path}: {error}; the checkpoint does not match its "
            "config.json or is incomplete: fetch or convert it again"
        ) from error
    model.eval()
    if pack_weights and packs_weights(dtype, device):
        pack_dense_weights(model)
    num_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    logger.info(
        "loaded %s (%s%s, %.0f MB of weights) in %.1fs",
        path.name,
        str(dtype).removeprefix("torch."),
        _describe(quantization),
        num_bytes / 1e6,
        time.perf_counter() - started,
    )
    return model


def _describe(quantization: QuantizationScheme | None) -> str:
    if quantization is None:
        return ""
    kernel_dtype = quantization.kernel_dtype
    computing = "" if kernel_dtype is None else f" computing in {str(kernel_dtype)[6:]}"
    return f", {quantization.method} {quantization.bits}-bit{computing}"
