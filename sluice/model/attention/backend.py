"""The attention plug point: how a step's queries attend over the paged KV cache.

Terms: a *slot* is one token's place in the cache (block id * block size + offset); a request's
*block table* lists its blocks in order; its *context* is every token whose K/V is in the cache
once this step has written its new ones. A backend builds its own metadata once per step from a
`BatchLayout` and reuses it in every layer."""

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True, slots=True)
class BatchLayout:
    """The shape of one step, as plain lists (one entry per request, in batch order)."""

    query_lens: list[int]
    """New tokens each request computes this step."""
    num_computed_tokens: list[int]
    """Tokens already in the cache before this step."""
    block_tables: list[list[int]]
    block_size: int

    @property
    def context_lens(self) -> list[int]:
        return [
            done + new for done, new in zip(self.num_computed_tokens, self.query_lens, strict=True)
        ]


class AttentionMetadata(Protocol):
    slot_mapping: torch.Tensor
    """[num_tokens] int64: where each new token's K/V goes."""


class AttentionBackend(Protocol):
    def build_metadata(self, layout: BatchLayout, device: torch.device) -> AttentionMetadata: ...

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        kv_cache: torch.Tensor,
        metadata: AttentionMetadata,
        scale: float,
    ) -> torch.Tensor:
        """Write k, v into `kv_cache` and attend.

        q: [num_tokens, num_heads, head_dim]; k, v: [num_tokens, num_kv_heads, head_dim];
        kv_cache: [2, num_kv_heads, num_slots, head_dim]. Returns [num_tokens, num_heads, head_dim].
        """
        ...

    def prompt_attention_bytes(self, num_heads: int, prompt_lengths: list[int]) -> int:
        """An upper bound of the memory that attending these prompts in one step takes beyond
        the queries, keys and values."""
        ...


def write_kv(
    kv_cache: torch.Tensor, slot_mapping: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> None:
    """Store a step's new keys and values ([num_tokens, kv_heads, dim]) at their slots."""
    kv_cache[0].index_copy_(1, slot_mapping, k.transpose(0, 1))
    kv_cache[1].index_copy_(1, slot_mapping, v.transpose(0, 1))


def slot_mapping_for(layout: BatchLayout) -> list[int]:
    """The cache slot of every new token of the step, in flattened batch order."""
    size = layout.block_size
    slots: list[int] = []
    for table, start, count in zip(
        layout.block_tables, layout.num_computed_tokens, layout.query_lens, strict=True
    ):
        slots.extend(table[pos // size] * size + pos % size for pos in range(start, start + count))
    return slots
