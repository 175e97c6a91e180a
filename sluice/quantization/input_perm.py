"""The input-feature order of an act-order quantized linear: registered, filled and applied here.

See `gptq` for why the weight's input features get reordered and the activations follow."""

import torch
from torch import nn

from sluice.quantization.quantized_weight import QuantizedWeight


def create_input_perm(layer: nn.Module, input_size: int) -> None:
    layer.input_perm = nn.Parameter(torch.empty(input_size, dtype=torch.int64), False)


def load_input_perm(layer: nn.Module, weight: QuantizedWeight, has_input_perm: bool) -> None:
    if weight.input_perm is not None and not has_input_perm:
        raise ValueError(
            "the weight reorders its input features; create the method with has_input_perm"
        )
    if has_input_perm:
        perm = weight.input_perm
        if perm is None:  # an act-order layer whose groups happened to be in order already
            perm = torch.arange(weight.input_size)
        layer.input_perm.data.copy_(perm)


def permute_input(layer: nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """rows: [num_tokens, input_size], columns in checkpoint order -> in the weight's order."""
    return rows.index_select(1, layer.input_perm)
