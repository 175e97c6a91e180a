"""Which tensor-parallel shard this process is, and the collectives layers call.

A leaf: layers ask it for their rank and world size and call `all_reduce`; with one shard every
collective is the identity, so single-device code pays nothing."""

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True, slots=True)
class ParallelContext:
    tp_rank: int = 0
    tp_size: int = 1

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over the shards, in place."""
        if self.tp_size > 1:
            dist.all_reduce(tensor)
        return tensor

    def all_gather_last_dim(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate each shard's slice of the last dimension."""
        if self.tp_size == 1:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.tp_size)]
        dist.all_gather(parts, tensor)
        return torch.cat(parts, dim=-1)


SINGLE_DEVICE = ParallelContext()
