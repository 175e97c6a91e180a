"""AWQ (Lin et al. 2023, arXiv:2306.00978), the scale search alone: before 4-bit round-to-nearest,
each linear group's input channels are scaled up by s = a^alpha, with a the channel's mean |x| on
the calibration text, and the op feeding the group (a norm, or the linear before) is scaled down
by the same s, so the full-precision layer computes the same function while the salient channels
get a finer grid. alpha is chosen per group from a grid by the output error it leaves on the
calibration inputs, read off the Hessian H = 2 X^T X (alpha 0 is plain round-to-nearest, so the
search never does worse than that). AutoAWQ's clipping search, which ranks clip ratios by
output error, is not done; `clip_search` rounds each group on the range that rounds its weights
best instead (see `gptq_algorithm`), after the scales are chosen.

Scales are searched for every group of a layer on the full-precision layer, then every linear is
rounded, as AutoAWQ does. A group whose feeding op is a linear of another width (o_proj under
grouped-query attention) is not scaled, as in AutoAWQ."""

import dataclasses
from collections.abc import Mapping
from typing import Final

import torch
from torch import nn

from sluice.quantization.gptq_algorithm import (
    GptqParams,
    GptqResult,
    relative_output_error,
    round_to_nearest,
)
from sluice.quantization.sequential import (
    CollectStats,
    InputStats,
    QuantizedLinear,
    quantize_layers,
)

BITS: Final = 4
ALPHAS: Final = tuple(i / 20 for i in range(20))
MIN_SCALE: Final = 1e-4

_LLAMA_FEEDERS: Final = {
    "self_attn.q_proj": "input_layernorm",
    "self_attn.o_proj": "self_attn.v_proj",
    "mlp.gate_proj": "post_attention_layernorm",
    "mlp.down_proj": "mlp.up_proj",
}
FEEDERS: Final[Mapping[str, Mapping[str, str]]] = {
    "llama": _LLAMA_FEEDERS,
    "mistral": _LLAMA_FEEDERS,
    "qwen2": _LLAMA_FEEDERS,
    "qwen3": _LLAMA_FEEDERS,
}
"""Per model_type: for the first linear of each group, the module whose output is the group's
input and which can take 1/s: a norm (its weight) or a linear (its output rows and bias)."""


class AwqLayerQuantizer:
    def __init__(self, params: GptqParams, feeders: Mapping[str, str]) -> None:
        """`params`: the grid (4 bits, asymmetric, groups in input order) and its fitting."""
        if params.bits != BITS or params.sym or params.desc_act:
            raise ValueError("AWQ rounds to 4-bit asymmetric groups in input order")
        self.params = params
        self.feeders = feeders
        self.rescaled_norms: list[nn.Module] = []
        """Norms whose weights were divided by a scale: the checkpoint must carry the new ones."""

    def quantize_layer(
        self, layer: nn.Module, order: tuple[tuple[str, ...], ...], collect: CollectStats
    ) -> list[QuantizedLinear]:
        hessians: dict[str, torch.Tensor] = {}
        for group in order:
            linears = [layer.get_submodule(name) for name in group]
            stats = collect(linears)
            feeder = layer.get_submodule(self.feeders[group[0]])
            scale = self._scale(feeder, linears, stats)
            hessian = stats.hessian
            if scale is not None:
                _fold(feeder, linears, scale)
                if not isinstance(feeder, nn.Linear):
                    self.rescaled_norms.append(feeder)
                hessian = hessian / torch.outer(scale, scale)  # the linears now read x / s
            hessians.update(dict.fromkeys(group, hessian))
        quantized = []
        for group in order:
            for name in group:
                linear = layer.get_submodule(name)
                result = round_to_nearest(linear.weight.data, self.params)
                dequantized = result.dequantize()
                error = relative_output_error(linear.weight.data, dequantized, hessians[name])
                quantized.append(QuantizedLinear(name, result, error))
                linear.weight.data = dequantized.to(linear.weight.dtype)
        return quantized

    def _scale(
        self, feeder: nn.Module, linears: list[nn.Module], stats: InputStats
    ) -> torch.Tensor | None:
        """The group's input scale, or None where there is nothing to fold."""
        if not _can_take_scale(feeder, linears[0].in_features):
            return None
        scale = search_scale([linear.weight for linear in linears], stats, self.params)
        return None if bool((scale == 1).all()) else scale  # alpha 0: plain rounding


def awq_quantize_model(
    model: nn.Module, token_ids: torch.Tensor, params: GptqParams
) -> tuple[dict[str, GptqResult], dict[str, torch.Tensor]]:
    """AWQ every decoder-layer linear of model (fp32, eval mode) on token_ids [samples, seq_len].

    Returns the quantized linears keyed by module name, and the norm weights the search changed
    keyed by checkpoint tensor name: a checkpoint needs both."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in FEEDERS:
        raise ValueError(
            f"AWQ for model type {model_type!r} is not supported "
            f"(supported: {', '.join(sorted(FEEDERS))})"
        )
    quantizer = AwqLayerQuantizer(params, FEEDERS[model_type])
    # AWQ's layout has no short last group (GPTQ's has)
    results = quantize_layers(model, token_ids, quantizer, params, short_last_group=False)
    names = {module: name for name, module in model.named_modules()}
    norms = {
        f"{names[norm]}.weight": norm.weight.detach().clone() for norm in quantizer.rescaled_norms
    }
    return results, norms


def search_scale(
    weights: list[torch.Tensor], stats: InputStats, params: GptqParams
) -> torch.Tensor:
    """The input-channel scale s [input_size] among a^alpha that leaves the group's weights,
    scaled by s and rounded, with the least output error on the calibration inputs."""
    salience = stats.mean_abs.float()
    best_error, best_scale = float("inf"), torch.ones_like(salience)
    # The search ranks scales by plain min/max rounding; clipping, if asked, comes after it.
    params = dataclasses.replace(params, clip_search=False)
    for alpha in ALPHAS:
        scale = salience.pow(alpha).clamp(min=MIN_SCALE)
        scale = scale / (scale.max() * scale.min()).sqrt()
        error = 0.0
        for weight in weights:
            w = weight.detach().float()
            rounded = round_to_nearest(w * scale, params).dequantize() / scale
            delta = rounded - w
            error += float(((delta @ stats.hessian) * delta).sum())
        if error < best_error:
            best_error, best_scale = error, scale
    return best_scale


def _can_take_scale(feeder: nn.Module, input_size: int) -> bool:
    if isinstance(feeder, nn.Linear):
        return feeder.out_features == input_size
    weight = getattr(feeder, "weight", None)
    return isinstance(weight, torch.Tensor) and weight.shape == (input_size,)


def _fold(feeder: nn.Module, linears: list[nn.Module], scale: torch.Tensor) -> None:
    """Scale the linears' inputs up by `scale` and the feeder's output down: same function."""
    with torch.no_grad():
        if isinstance(feeder, nn.Linear):
            feeder.weight.div_(scale.unsqueeze(1).to(feeder.weight.dtype))
            if feeder.bias is not None:
                feeder.bias.div_(scale.to(feeder.bias.dtype))
        else:
            feeder.weight.div_(scale.to(feeder.weight.dtype))
        for linear in linears:
            linear.weight.mul_(scale.unsqueeze(0).to(linear.weight.dtype))
