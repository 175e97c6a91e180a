"""The paged KV cache tensors: one [2, num_kv_heads, num_slots, head_dim] tensor per layer.
Heads come first so that gathering a head's blocks yields each request's keys as one
contiguous matrix, which a batched matmul reads as it is.

Which block belongs to which request is the engine's business (engine/kv_cache); this module
only sizes and allocates the memory."""

from dataclasses import dataclass

import torch
from transformers import PretrainedConfig

from sluice.distributed.parallel_context import SINGLE_DEVICE, ParallelContext
from sluice.distributed.sharding import model_shard_heads


@dataclass(frozen=True, slots=True)
class KVCacheSpec:
    num_layers: int
    num_kv_heads: int
    """KV heads held by this shard."""
    head_dim: int
    dtype: torch.dtype

    @classmethod
    def for_model(
        cls,
        config: PretrainedConfig,
        dtype: torch.dtype,
        parallel: ParallelContext = SINGLE_DEVICE,
    ) -> "KVCacheSpec":
        """The cache of a Llama-family model's shard: the KV heads `shard_heads` gives it."""
        heads = model_shard_heads(config, parallel.tp_size, parallel.tp_rank)
        return cls(config.num_hidden_layers, heads.num_kv_heads, heads.head_dim, dtype)

    @property
    def bytes_per_token(self) -> int:
        element_size = torch.empty((), dtype=self.dtype).element_size()
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * element_size

    def allocate(
        self, num_blocks: int, block_size: int, device: torch.device
    ) -> list[torch.Tensor]:
        shape = (2, self.num_kv_heads, num_blocks * block_size, self.head_dim)
        return [torch.zeros(shape, dtype=self.dtype, device=device) for _ in range(self.num_layers)]
