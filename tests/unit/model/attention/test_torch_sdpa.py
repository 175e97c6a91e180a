"""TorchSdpaBackend: metadata on hand-made layouts, and forward on a tiny random paged cache
against naive per-request causal attention (float32, GQA 4 query heads / 2 KV heads)."""

import math

import pytest
import torch

from sluice.model.attention.backend import BatchLayout, slot_mapping_for
from sluice.model.attention.torch_sdpa import TorchSdpaBackend

NUM_HEADS, NUM_KV_HEADS, HEAD_DIM = 4, 2, 8
BLOCK_SIZE, NUM_BLOCKS = 4, 16
CPU = torch.device("cpu")

MIXED = BatchLayout(  # a prompt, a decode, a prompt chunk after 4 computed tokens
    query_lens=[5, 1, 3],
    num_computed_tokens=[0, 6, 4],
    block_tables=[[3, 9], [0, 5], [12, 2]],
    block_size=BLOCK_SIZE,
)
DECODES = BatchLayout(  # equal query lengths: no padding
    query_lens=[1, 1],
    num_computed_tokens=[3, 8],
    block_tables=[[7], [1, 4, 11]],
    block_size=BLOCK_SIZE,
)
PROMPT = BatchLayout(
    query_lens=[6], num_computed_tokens=[0], block_tables=[[5, 6]], block_size=BLOCK_SIZE
)


def _slot(table: list[int], position: int) -> int:
    return table[position // BLOCK_SIZE] * BLOCK_SIZE + position % BLOCK_SIZE


def test_torch_sdpa_metadata_slot_mapping_and_context_slots() -> None:
    metadata = TorchSdpaBackend().build_metadata(MIXED, CPU)

    assert metadata.slot_mapping.tolist() == slot_mapping_for(MIXED)
    assert metadata.slot_mapping.dtype == torch.long
    assert metadata.context_slots.shape == (3, 7)
    for row, (table, context_len) in enumerate(
        zip(MIXED.block_tables, MIXED.context_lens, strict=True)
    ):
        expected = [_slot(table, p) for p in range(context_len)]
        assert metadata.context_slots[row, :context_len].tolist() == expected


def test_torch_sdpa_metadata_mask_is_causal_from_each_request_offset() -> None:
    metadata = TorchSdpaBackend().build_metadata(MIXED, CPU)

    assert metadata.max_query_len == 5
    assert metadata.attn_mask.shape == (3, 1, 5, 7)
    for row, (start, count) in enumerate(
        zip(MIXED.num_computed_tokens, MIXED.query_lens, strict=True)
    ):
        for query in range(count):
            visible = metadata.attn_mask[row, 0, query].nonzero().flatten().tolist()
            assert visible == list(range(start + query + 1))


def test_torch_sdpa_metadata_query_rows_only_when_lengths_differ() -> None:
    backend = TorchSdpaBackend()

    mixed = backend.build_metadata(MIXED, CPU).query_rows
    assert mixed is not None
    assert mixed.tolist() == [0, 1, 2, 3, 4, 5, 10, 11, 12]
    assert backend.build_metadata(DECODES, CPU).query_rows is None


def _naive_attention(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, start: int
) -> torch.Tensor:
    """q: [n, heads, dim] at positions start..start+n-1; keys/values: [start+n, kv_heads, dim]."""
    group = NUM_HEADS // NUM_KV_HEADS
    out = torch.empty_like(q)
    for i in range(q.shape[0]):
        visible = start + i + 1
        for head in range(NUM_HEADS):
            k = keys[:visible, head // group]
            v = values[:visible, head // group]
            weights = (k @ q[i, head] / math.sqrt(HEAD_DIM)).softmax(-1)
            out[i, head] = weights @ v
    return out


@pytest.mark.parametrize("layout", [MIXED, DECODES, PROMPT], ids=["mixed", "decodes", "prompt"])
def test_torch_sdpa_forward_matches_naive_causal_attention(layout: BatchLayout) -> None:
    rng = torch.Generator().manual_seed(0)
    num_slots = NUM_BLOCKS * BLOCK_SIZE
    # Garbage everywhere, so reading a wrong slot changes the result.
    kv_cache = torch.randn(2, num_slots, NUM_KV_HEADS, HEAD_DIM, generator=rng)
    num_tokens = sum(layout.query_lens)
    q = torch.randn(num_tokens, NUM_HEADS, HEAD_DIM, generator=rng)
    k = torch.randn(num_tokens, NUM_KV_HEADS, HEAD_DIM, generator=rng)
    v = torch.randn(num_tokens, NUM_KV_HEADS, HEAD_DIM, generator=rng)
    # What each request's earlier steps left in the cache.
    past = [
        (kv_cache[0, slots].clone(), kv_cache[1, slots].clone())
        for slots in (
            [_slot(table, p) for p in range(start)]
            for table, start in zip(layout.block_tables, layout.num_computed_tokens, strict=True)
        )
    ]
    backend = TorchSdpaBackend()

    out = backend.forward(
        q, k, v, kv_cache, backend.build_metadata(layout, CPU), 1 / math.sqrt(HEAD_DIM)
    )

    expected, offset = [], 0
    for (past_k, past_v), start, count in zip(
        past, layout.num_computed_tokens, layout.query_lens, strict=True
    ):
        rows = slice(offset, offset + count)
        keys, values = torch.cat([past_k, k[rows]]), torch.cat([past_v, v[rows]])
        expected.append(_naive_attention(q[rows], keys, values, start))
        offset += count
    torch.testing.assert_close(out, torch.cat(expected), rtol=1e-5, atol=1e-5)
    slots = torch.tensor(slot_mapping_for(layout))
    assert torch.equal(kv_cache[0, slots], k)
    assert torch.equal(kv_cache[1, slots], v)
