"""Reference attention backend: gather each request's context from the paged cache into a
padded batch and call `scaled_dot_product_attention` once per layer.

Correct on every device and dtype, and slow: every request's queries are padded to the
longest of the step. The yardstick the paged backend (paged.py) is measured against."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sluice.model.attention.backend import BatchLayout, slot_mapping_for, write_kv


@dataclass(frozen=True, slots=True)
class SdpaMetadata:
    slot_mapping: torch.Tensor
    """[num_tokens] int64."""
    context_slots: torch.Tensor
    """[num_requests, max_context_len] int64: cache slots of each request's context (padded)."""
    attn_mask: torch.Tensor
    """[num_requests, 1, max_query_len, max_context_len] bool: causal within the context."""
    query_rows: torch.Tensor | None
    """[num_tokens] int64: row of each token in the flattened padded query batch, or None when
    every request has the same query length (no padding needed)."""
    max_query_len: int


class TorchSdpaBackend:
    def build_metadata(self, layout: BatchLayout, device: torch.device) -> SdpaMetadata:
        num_requests = len(layout.query_lens)
        query_lens = torch.tensor(layout.query_lens)
        starts = torch.tensor(layout.num_computed_tokens)
        context_lens = starts + query_lens
        max_query, max_context = int(query_lens.max()), int(context_lens.max())
        size = layout.block_size
        max_blocks = -(-max_context // size)
        tables = torch.zeros(num_requests, max_blocks, dtype=torch.long)
        for row, table in enumerate(layout.block_tables):
            used = table[:max_blocks]
            tables[row, : len(used)] = torch.tensor(used, dtype=torch.long)
        key_pos = torch.arange(max_context)
        context_slots = tables[:, key_pos // size] * size + key_pos % size
        query_pos = starts[:, None] + torch.arange(max_query)[None, :]  # [requests, max_query]
        mask = key_pos[None, None, :] <= query_pos[:, :, None]
        # Padded query rows see key 0 only, so their softmax stays finite; they are dropped.
        is_padding = torch.arange(max_query)[None, :] >= query_lens[:, None]
        mask = (mask & ~is_padding[:, :, None]) | (is_padding[:, :, None] & (key_pos == 0))
        query_rows = None
        if bool((query_lens != max_query).any()):
            offsets = torch.arange(num_requests) * max_query
            query_rows = torch.cat(
                [
                    torch.arange(n) + off
                    for n, off in zip(layout.query_lens, offsets.tolist(), strict=True)
                ]
            )
        return SdpaMetadata(
            slot_mapping=torch.tensor(slot_mapping_for(layout), dtype=torch.long, device=device),
            context_slots=context_slots.to(device),
            attn_mask=mask.unsqueeze(1).to(device),
            query_rows=None if query_rows is None else query_rows.to(device),
            max_query_len=max_query,
        )

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        kv_cache: torch.Tensor,
        metadata: SdpaMetadata,
        scale: float,
    ) -> torch.Tensor:
        write_kv(kv_cache, metadata.slot_mapping, k, v)
        key_cache, value_cache = kv_cache[0], kv_cache[1]
        num_requests = metadata.context_slots.shape[0]
        num_heads, head_dim = q.shape[1], q.shape[2]
        # [requests, kv_heads, max_context, dim]
        keys = key_cache[:, metadata.context_slots].transpose(0, 1)
        values = value_cache[:, metadata.context_slots].transpose(0, 1)
        padded_q = _pad_queries(q, metadata, num_requests)  # [requests, max_q, heads, dim]
        out = F.scaled_dot_product_attention(
            padded_q.transpose(1, 2),
            keys,
            values,
            attn_mask=metadata.attn_mask,
            scale=scale,
            enable_gqa=True,
        )  # [requests, heads, max_q, dim]
        out = out.transpose(1, 2).reshape(-1, num_heads, head_dim)
        return out if metadata.query_rows is None else out[metadata.query_rows]

    def prompt_attention_bytes(self, num_heads: int, prompt_lengths: list[int]) -> int:
        """The step's causal mask (a byte a query-key pair, padded to the longest prompt) and
        the float32 scores of every head, which the math kernel materialises."""
        longest = max(prompt_lengths, default=0)
        pairs = len(prompt_lengths) * longest * longest
        return pairs + 4 * num_heads * pairs


def _pad_queries(q: torch.Tensor, metadata: SdpaMetadata, num_requests: int) -> torch.Tensor:
    shape = (num_requests, metadata.max_query_len, q.shape[1], q.shape[2])
    if metadata.query_rows is None:
        return q.view(shape)
    padded = q.new_zeros(num_requests * metadata.max_query_len, q.shape[1], q.shape[2])
    padded[metadata.query_rows] = q
    return padded.view(shape)
