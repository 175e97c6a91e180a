"""The dense linear method: a token's output does not depend on the other rows of its step."""

import pytest
import torch
from torch import nn

from sluice.cpu import bfloat16_support, cpu_flags, has_native_bf16
from sluice.model.layers.linear import UnquantizedLinearMethod


@pytest.mark.skipif(
    "avx512f" in cpu_flags() and not has_native_bf16(),
    reason=f"this CPU's bfloat16 matmuls ({bfloat16_support()}) round a row differently among "
    "other rows, as the engine's start-up check reports",
)
def test_a_bfloat16_row_alone_gets_the_output_it_gets_among_others() -> None:
    generator = torch.Generator().manual_seed(0)
    layer = nn.Module()
    method = UnquantizedLinearMethod()
    # The shape of SmolLM2's MLP down projection, where oneDNN's single-row bfloat16 kernel
    # rounds some outputs differently from its multi-row one.
    method.create_weights(layer, input_size=1536, output_size=576, dtype=torch.bfloat16)
    layer.weight.data.copy_(torch.randn(576, 1536, generator=generator))
    rows = torch.randn(16, 1536, generator=generator).to(torch.bfloat16)

    together = method.apply(layer, rows, None)
    alone = torch.cat([method.apply(layer, rows[i : i + 1], None) for i in range(16)])

    assert torch.equal(alone, together)
