"""Sequential quantization of a transformers causal LM: decoder layer by decoder layer, each layer
calibrated on the outputs of the layers already quantized. How one layer's linears are quantized
is a `LayerQuantizer`'s business: GPTQ (`GptqLayerQuantizer`, linear group by linear group, each
group calibrated on the outputs of the groups already quantized, as AutoGPTQ's true-sequential
mode) or AWQ (`awq_search`). Embeddings, norms and lm_head stay full precision. Reads and writes
no files: the model comes in loaded, the results go out keyed by checkpoint prefix."""

import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

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


@dataclass(frozen=True, slots=True)
class InputStats:
    """What a linear group's calibration inputs X [rows, input_size] look like."""

    hessian: torch.Tensor
    """H = 2 X^T X / rows."""
    mean_abs: torch.Tensor
    """Mean |x| per input feature: AWQ's measure of how salient an input channel is."""


CollectStats = Callable[[Sequence[nn.Module]], InputStats]
"""Runs the layer over the calibration inputs, returning the stats at the first given linear."""


@dataclass(frozen=True, slots=True)
class QuantizedLinear:
    name: str
    """The linear's module name inside its decoder layer (`self_attn.q_proj`)."""
    result: GptqResult
    relative_error: float
    """Output error on the calibration inputs, as `relative_output_error`."""


class LayerQuantizer(Protocol):
    def quantize_layer(
        self, layer: nn.Module, order: tuple[tuple[str, ...], ...], collect: CollectStats
    ) -> list[QuantizedLinear]:
        """Quantize one decoder layer's linears, given in groups in data-flow order; leave each
        holding its dequantized weight."""
        ...


class GptqLayerQuantizer:
    """GPTQ, group by group: each group sees the outputs of the groups quantized before it."""

    def __init__(self, params: GptqParams) -> None:
        self.params = params

    def quantize_layer(
        self, layer: nn.Module, order: tuple[tuple[str, ...], ...], collect: CollectStats
    ) -> list[QuantizedLinear]:
        quantized = []
        for group in order:
            linears = [layer.get_submodule(name) for name in group]
            hessian = collect(linears).hessian  # the group's linears read the same input
            for name, linear in zip(group, linears, strict=True):
                result = gptq_quantize(linear.weight.data, hessian, self.params)
                dequantized = result.dequantize()
                error = relative_output_error(linear.weight, dequantized, hessian)
                quantized.append(QuantizedLinear(name, result, error))
                linear.weight.data = dequantized.to(linear.weight.dtype)
        return quantized


def quantize_model(
    model: nn.Module, token_ids: torch.Tensor, params: GptqParams
) -> dict[str, GptqResult]:
    """GPTQ every decoder-layer linear of model (fp32, eval mode) on token_ids [samples, seq_len].

    The model's linears are left holding their dequantized weights. Returns results keyed by
    the linears' module names, which are the checkpoint's tensor prefixes."""
    return quantize_layers(model, token_ids, GptqLayerQuantizer(params), params)


def quantize_layers(
    model: nn.Module,
    token_ids: torch.Tensor,
    quantizer: LayerQuantizer,
    params: GptqParams,
    *,
    short_last_group: bool = True,
) -> dict[str, GptqResult]:
    """Run `quantizer` over every decoder layer of model in turn, checking first that its grid
    (`params`) fits the linears; results keyed by the linears' module names in the model (the
    checkpoint's tensor prefixes). Without `short_last_group`, a group size that does not divide
    a linear's input size is refused."""
    layers = _decoder_layers(model)
    order = linear_order(model)
    _check_group_size(layers, order, params, short_last_group)
    results: dict[str, GptqResult] = {}
    with torch.inference_mode():
        chunks = _capture_layer_inputs(model, layers[0], token_ids)
    prefix = _layers_prefix(model, layers)
    for index, layer in enumerate(layers):
        started = time.perf_counter()
        collect = functools.partial(_collect_stats, layer, chunks)
        quantized = quantizer.quantize_layer(layer, order, collect)
        results |= {f"{prefix}.{index}.{q.name}": q.result for q in quantized}
        with torch.inference_mode():
            chunks = [_Chunk(_run_layer(layer, chunk), chunk.kwargs) for chunk in chunks]
        errors = [q.relative_error for q in quantized]
        logger.info(
            "layer %d/%d quantized in %.1fs (relative output error: mean %.2e, max %.2e)",
            index + 1,
            len(layers),
            time.perf_counter() - started,
            sum(errors) / len(errors),
            max(errors),
        )
    return results


def _layers_prefix(model: nn.Module, layers: nn.ModuleList) -> str:
    """The module name of the decoder layer list (`model.layers`)."""
    return next(name for name, module in model.named_modules() if module is layers)


def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise ValueError("cannot find the model's decoder layers (expected model.layers)")
    return layers


def linear_order(model: nn.Module) -> tuple[tuple[str, ...], ...]:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in LINEAR_ORDER:
        raise ValueError(
            f"quantizing model type {model_type!r} is not supported "
            f"(supported: {', '.join(sorted(LINEAR_ORDER))})"
        )
    return LINEAR_ORDER[model_type]


def _check_group_size(
    layers: Sequence[nn.Module],
    order: tuple[tuple[str, ...], ...],
    params: GptqParams,
    short_last_group: bool,
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
                if not short_last_group:
                    divisor = math.gcd(params.group_size, linear.in_features)
                    raise ValueError(
                        f"group size {params.group_size} does not divide {name}'s "
                        f"{linear.in_features} input features, as this layout needs; pass "
                        f"`--group-size {divisor}` or another divisor"
                    )
                logger.info(
                    "group size %d does not divide %s's %d input features: its last group is "
                    "shorter (AutoGPTQ's layout)",
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


def _collect_stats(
    layer: nn.Module, chunks: Sequence[_Chunk], linears: Sequence[nn.Module]
) -> InputStats:
    """One forward pass of the layer over every chunk, accumulating the first linear's input
    (the group's linears share it)."""
    linear = linears[0]
    accumulator = HessianAccumulator(linear.in_features)
    abs_sum = torch.zeros(linear.in_features)

    def observe(_: nn.Module, args: tuple) -> None:
        accumulator.add(args[0])
        abs_sum.add_(args[0].float().abs().reshape(-1, linear.in_features).sum(0))

    hook = linear.register_forward_pre_hook(observe)
    try:
        with torch.inference_mode():
            for chunk in chunks:
                _run_layer(layer, chunk)
    finally:
        hook.remove()
    return InputStats(accumulator.hessian, abs_sum / max(accumulator.num_rows, 1))
