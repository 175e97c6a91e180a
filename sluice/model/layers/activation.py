"""Gated activations."""

import torch
import torch.nn.functional as F
from torch import nn

from sluice.model.kernels import cpu_kernels_for


class SiluAndMul(nn.Module):
    """silu(gate) * up, with gate and up concatenated on the last dimension."""

    def forward(self, gate_up: torch.Tensor) -> torch.Tensor:
        kernels = cpu_kernels_for(gate_up)
        if kernels is not None and gate_up.dim() == 2:
            return kernels.silu_and_mul(gate_up.contiguous())
        return self.reference_forward(gate_up)

    def reference_forward(self, gate_up: torch.Tensor) -> torch.Tensor:
        """In torch's operators (devices and CPUs without the C++ kernels)."""
        gate, up = gate_up.chunk(2, dim=-1)
        return F.silu(gate) * up
