"""Which tensor-parallel shard this process is, and the collectives layers call.

A leaf: layers ask it for their rank and world size and call `all_reduce`; with one shard every
collective is the identity, so single-device code pays nothing. A collective that fails (a
shard crashed, its host went away, or it stopped answering within the group's timeout) raises
`ShardLost`, which no retry can mend: the shards no longer run in step."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist


class ShardLost(RuntimeError):
    """Another shard is gone or stopped answering."""


@contextmanager
def collective(what: str) -> Iterator[None]:
    """Turn the failure of the collective inside into `ShardLost`, saying `what` failed."""
    try:
        yield
    except RuntimeError as error:
        raise ShardLost(f"{what}: {error}") from error


@dataclass(frozen=True, slots=True)
class ParallelContext:
    tp_rank: int = 0
    tp_size: int = 1
    group: dist.ProcessGroup | None = None
    """The shards' group for the model's collectives; None: the default group."""
    reduce_dtype: torch.dtype | None = None
    """The dtype partial sums are added in; None: the tensor's own. float32 for bfloat16
    activations changes no greedy token on 2 shards (two bfloat16 partials round the same
    either way) and costs 10% there (bench/results/sharded_bf16_agreement_*.md), so the
    server leaves it None."""

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over the shards."""
        if self.tp_size == 1:
            return tensor
        summed = tensor if self.reduce_dtype is None else tensor.to(self.reduce_dtype)
        with collective("all-reduce failed"):
            dist.all_reduce(summed, group=self.group)
        return summed.to(tensor.dtype)

    def all_gather_last_dim(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate each shard's slice of the last dimension (equal slices)."""
        if self.tp_size == 1:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.tp_size)]
        with collective("all-gather failed"):
            dist.all_gather(parts, tensor.contiguous(), group=self.group)
        return torch.cat(parts, dim=-1)


SINGLE_DEVICE = ParallelContext()
