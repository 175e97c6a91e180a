"""The unpacked form every converter produces and every quantized linear method consumes.

Holds integers, not floats: dequantizing is the kernel's job, at run time, group by group."""

from dataclasses import dataclass

import torch


@dataclass(frozen=True, slots=True)
class QuantizedWeight:
    """w[n, k] = (q[n, k] - zeros[k // group_size, n]) * scales[k // group_size, n].

    There are ceil(input_size / group_size) groups: where the group size does not divide the
    input, the last group is shorter (AutoGPTQ's layout).

    With `input_perm`, column k of `q` multiplies input feature `input_perm[k]`: the columns were
    reordered so that every group is contiguous (GPTQ act-order, see `gptq`)."""

    q: torch.Tensor  # [output_size, input_size] int32 in [0, 2**bits)
    scales: torch.Tensor  # [num_groups, output_size] float (fp16 in checkpoints)
    # [num_groups, output_size] int32 in [0, 2**bits); float where the format's zero point is
    # fractional (GGUF Q4_1), which only the int4 kernel takes
    zeros: torch.Tensor
    bits: int
    group_size: int  # input features per group; input_size when quantized per output channel
    input_perm: torch.Tensor | None = None  # [input_size] int64, or None for the identity

    def __post_init__(self) -> None:
        output_size, input_size = self.q.shape
        if not 0 < self.group_size <= input_size:
            raise ValueError(f"group size {self.group_size} for input size {input_size}")
        groups_shape = (self.num_groups, output_size)
        for name in ("scales", "zeros"):
            shape = tuple(getattr(self, name).shape)
            if shape != groups_shape:
                raise ValueError(f"{name} has shape {shape}, expected {groups_shape}")
        if self.input_perm is not None and tuple(self.input_perm.shape) != (input_size,):
            raise ValueError(
                f"input_perm has shape {tuple(self.input_perm.shape)}, expected ({input_size},)"
            )

    def dequantize(self) -> torch.Tensor:
        """[output_size, input_size] float32, columns in q's order: for checks and tests (the
        kernels dequantize group by group as they multiply)."""
        groups = torch.arange(self.input_size, device=self.q.device) // self.group_size
        return (self.q - self.zeros[groups].t()) * self.scales[groups].t().float()

    @property
    def num_groups(self) -> int:
        return -(-self.input_size // self.group_size)

    @property
    def output_size(self) -> int:
        return self.q.shape[0]

    @property
    def input_size(self) -> int:
        return self.q.shape[1]
