"""Sequential GPTQ over a transformers causal LM: decoder layer by decoder layer, linear group by
linear group, each group calibrated on the outputs of the groups and layers already quantized (as
AutoGPTQ's true-sequential mode). Embeddings, norms and lm_head stay full precision. Reads and
writes no files: the model comes in loaded, the results go out keyed by checkpoint prefix."""

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import torch
from torch import nn

from sluice.quantization.gptq_algorithm import (
    GptqParams,
    GptqResult,
    HessianAccumulator,
    gptq_quantize,
    relative_output_error,
)

logger = logging.getLogger(__name__)

_LLAMA_ORDER: Final = (
    ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    ("self_attn.o_proj",),
    ("mlp.gate_proj", "mlp.up_proj"),
    ("mlp.down_proj",),
)
LINEAR_ORDER: Final[Mapping[str, tuple[tuple[str, ...], ...]]] = {
    "llama": _LLAMA_ORDER,
    "mistral": _LLAMA_ORDER,
    "qwen2": _LLAMA_ORDER,
    "qwen3": _LLAMA_ORDER,
}
"""Per model_type: a decoder layer's linears in groups, in the order data flows through them.
The linears of one group read the same input, so one forward pass calibrates them all."""

SAMPLES_PER_PASS: Final = 4


@dataclass(slots=True)
class _Chunk:
    """A few calibration samples at one decoder layer's input."""

    hidden: torch.Tensor  # [samples, seq_len, hidden_size]
    kwargs: dict[str, object]  # what the model passed the layer besides hidden states


class _StopForward(Exception):
    """Raised by the capture hook: nothing past the first decoder layer is needed."""


def quantize_model(
    model: nn.Module, token_ids: torch.Tensor, params: GptqParams
) -> dict[str, GptqResult]:
    """GPTQ every decoder-layer linear of model (fp32, eval mode) on token_ids [samples, seq_len].

    The model's linears are left holding their dequantized weights. Returns results keyed by
    the linears' module names, which are the checkpoint's tensor prefixes."""
    layers = _decoder_layers(model)
    order = _linear_order(model)
    names = {module: name for name, module in model.named_modules()}
    _check_group_size(layers, order, params)
    results: dict[str, GptqResult] = {}
    with torch.inference_mode():
        chunks = _capture_layer_inputs(model, layers[0], token_ids)
    for index, layer in enumerate(layers):
        started = time.perf_counter()
        errors = []
        for group in order:
            linears = [layer.get_submodule(name) for name in group]
            hessians = _collect_hessians(layer, linears, chunks)
            for linear, hessian in zip(linears, hessians, strict=True):
                result = gptq_quantize(linear.weight.data, hessian, params)
                results[names[linear]] = result
                dequantized = result.dequantize()
                errors.append(relative_output_error(linear.weight, dequantized, hessian))
                linear.weight.data = dequantized.to(linear.weight.dtype)
        with torch.inference_mode():
            chunks = [_Chunk(_run_layer(layer, chunk), chunk.kwargs) for chunk in chunks]
        logger.info(
            "layer %d/%d quantized in %.1fs (relative output error: mean %.2e, max %.2e)",
            index + 1,
            len(layers),
            time.perf_counter() - started,
            sum(errors) / len(errors),
            max(errors),
        )
    return results


def _decoder_layers(model: nn.Module) -> Sequence[nn.Module]:
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise ValueError("cannot find the model's decoder layers (expected model.layers)")
    return layers


def _linear_order(model: nn.Module) -> tuple[tuple[str, ...], ...]:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in LINEAR_ORDER:
        raise ValueError(
            f"quantizing model type {model_type!r} is not supported "
            f"(supported: {', '.join(sorted(LINEAR_ORDER))})"
        )
    return LINEAR_ORDER[model_type]


def _check_group_size(
    layers: Sequence[nn.Module], order: tuple[tuple[str, ...], ...], params: GptqParams
) -> None:
    """Fail before any calibration work rather than at the first odd layer."""
    for group in order:
        for name in group:
            linear = layers[0].get_submodule(name)
            if not isinstance(linear, nn.Linear):
                raise ValueError(f"{name} is a {type(linear).__name__}, expected nn.Linear")
            if linear.out_features % (32 // params.bits):
                raise ValueError(
                    f"{name}'s {linear.out_features} outputs cannot pack into 32-bit words "
                    f"at {params.bits} bits"
                )
            if linear.in_features % params.group_size_for(linear.in_features):
                logger.warning(
                    "group size %d does not divide %s's %d input features: its last group is "
                    "shorter (AutoGPTQ's layout, which sluice's own GPTQ reader refuses today)",
                    params.group_size,
                    name,
                    linear.in_features,
                )


def _capture_layer_inputs(
    model: nn.Module, first_layer: nn.Module, token_ids: torch.Tensor
) -> list[_Chunk]:
    """Run the model up to its first decoder layer, keeping what that layer receives."""
    chunks: list[_Chunk] = []

    def capture(module: nn.Module, args: tuple, kwargs: dict[str, object]) -> None:
        hidden = args[0] if args else kwargs.pop("hidden_states")
        chunks.append(_Chunk(hidden, dict(kwargs)))
        raise _StopForward

    hook = first_layer.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        for samples in token_ids.split(SAMPLES_PER_PASS):
            with contextlib.suppress(_StopForward):
                model(input_ids=samples, use_cache=False)
    finally:
        hook.remove()
    if len(chunks) != len(token_ids.split(SAMPLES_PER_PASS)):
        raise ValueError("the model's forward pass did not go through its first decoder layer")
    return chunks


def _run_layer(layer: nn.Module, chunk: _Chunk) -> torch.Tensor:
    output = layer(chunk.hidden, **chunk.kwargs)
    return output[0] if isinstance(output, tuple) else output


def _collect_hessians(
    layer: nn.Module, linears: Sequence[nn.Module], chunks: Sequence[_Chunk]
) -> list[torch.Tensor]:
    """One forward pass of the layer over every chunk, accumulating the group's input. The
    group's linears share that input (see LINEAR_ORDER), so they share one Hessian."""
    accumulator = HessianAccumulator(linears[0].in_features)
    hook = linears[0].register_forward_pre_hook(lambda _, args: accumulator.add(args[0]))
    try:
        with torch.inference_mode():
            for chunk in chunks:
                _run_layer(layer, chunk)
    finally:
        hook.remove()
    return [accumulator.hessian] * len(linears)
