"""Rotary position embedding (RoPE) with every scaling scheme `transformers` knows.

The inverse frequencies come from transformers' own rope initialisers (default, linear, llama3,
yarn, longrope, ...), so a checkpoint's `rope_scaling`/`rope_parameters` means the same here as
there. cos/sin are precomputed for every position once."""

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from sluice.model.kernels import cpu_kernels_for


def _rope_parameters(config: PretrainedConfig) -> dict[str, object]:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    return dict(params or {})


def _inverse_frequencies(config: PretrainedConfig, head_dim: int) -> tuple[torch.Tensor, float]:
    params = _rope_parameters(config)
    rope_type = str(params.get("rope_type", params.get("type", "default")))
    if rope_type == "default":
        theta = float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))  # type: ignore[arg-type]
        exponents = torch.arange(0, head_dim, 2, dtype=torch.float, device="cpu") / head_dim
        return 1.0 / (theta**exponents), 1.0
    if rope_type not in ROPE_INIT_FUNCTIONS:
        raise ValueError(f"unsupported rope type {rope_type!r}")
    inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](config, "cpu")
    return inv_freq.float(), float(scaling)


class RotaryEmbedding(nn.Module):
    def __init__(self, config: PretrainedConfig, head_dim: int, max_positions: int) -> None:
        super().__init__()
        # The tables are computed on the CPU whatever the model's device, so that every device
        # rotates by the same bits; then they move where the model is being built.
        inv_freq, scaling = _inverse_frequencies(config, head_dim)
        positions = torch.arange(max_positions, dtype=torch.float, device="cpu")
        freqs = torch.outer(positions, inv_freq)  # [max_positions, head_dim / 2]
        angles = torch.cat((freqs, freqs), dim=-1)  # [max_positions, head_dim]
        device = torch.get_default_device()
        self.register_buffer("cos", (angles.cos() * scaling).to(device), persistent=False)
        self.register_buffer("sin", (angles.sin() * scaling).to(device), persistent=False)

    def forward(
        self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q: [num_tokens, num_heads, head_dim], k: [num_tokens, num_kv_heads, head_dim]."""
        kernels = cpu_kernels_for(q)
        if kernels is not None:
            return kernels.rotary_embedding(q, k, positions, self.cos, self.sin)
        return self.reference_forward(positions, q, k)

    def reference_forward(
        self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """In torch's operators (devices and CPUs without the C++ kernels)."""
        cos = self.cos[positions].unsqueeze(1).to(q.dtype)  # [num_tokens, 1, head_dim]
        sin = self.sin[positions].unsqueeze(1).to(q.dtype)
        return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)
