"""RMSNorm with an optional fused residual add."""

import torch
import torch.nn.functional as F
from torch import nn

from sluice.model.kernels import cpu_kernels_for


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float, *, dtype: torch.dtype) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size, dtype=dtype), False)

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (normalized, new residual); the residual is `x` plus the one passed in."""
        kernels = cpu_kernels_for(x)
        if kernels is not None and x.dim() == 2:
            normed, residual = kernels.add_rms_norm(x.contiguous(), residual, self.weight, self.eps)
            return normed, residual
        return self.reference_forward(x, residual)

    def reference_forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """In torch's operators (devices and CPUs without the C++ kernels)."""
        if residual is not None:
            x = x + residual
        # Normalize in float32 as the reference implementation does, then cast back.
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)
        return normed * self.weight, x
