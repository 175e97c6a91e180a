"""The attention backends on a tiny random paged cache against naive per-request causal
attention (float32), the paged backend against the reference in bfloat16, and the metadata
of the gathering backend."""

import math
from collections.abc import Callable

import pytest
import torch

from sluice.model.attention import paged
from sluice.model.attention.backend import AttentionBackend, BatchLayout, slot_mapping_for
from sluice.model.attention.in_place import InPlaceAttentionBackend
from sluice.model.attention.paged import PagedAttentionBackend
from sluice.model.attention.torch_sdpa import TorchSdpaBackend
from tests.unit.model.attention.layouts import (
    ALL_LAYOUTS,
    BLOCK_SIZE,
    HEAD_DIM,
    NUM_BLOCKS,
    NUM_HEADS,
    NUM_KV_HEADS,
    slot,
)

CPU = torch.device("cpu")
SCALE = 1 / math.sqrt(HEAD_DIM)


BACKENDS: dict[str, Callable[[], AttentionBackend]] = {
    "in_place": InPlaceAttentionBackend.built_here,
    "paged": PagedAttentionBackend,
    "reference": TorchSdpaBackend,
}


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
            weights = (k @ q[i, head] * SCALE).softmax(-1)
            out[i, head] = weights @ v
    return out


def _random_step(
    layout: BatchLayout, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A cache full of garbage (so reading a wrong slot changes the result), and q, k, v."""
    rng = torch.Generator().manual_seed(0)
    num_tokens = sum(layout.query_lens)
    kv_cache = torch.randn(2, NUM_KV_HEADS, NUM_BLOCKS * BLOCK_SIZE, HEAD_DIM, generator=rng)
    q = torch.randn(num_tokens, NUM_HEADS, HEAD_DIM, generator=rng)
    k = torch.randn(num_tokens, NUM_KV_HEADS, HEAD_DIM, generator=rng)
    v = torch.randn(num_tokens, NUM_KV_HEADS, HEAD_DIM, generator=rng)
    return kv_cache.to(dtype), q.to(dtype), k.to(dtype), v.to(dtype)


def _run(
    backend: AttentionBackend, layout: BatchLayout, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    kv_cache, q, k, v = _random_step(layout, dtype)
    out = backend.forward(q, k, v, kv_cache, backend.build_metadata(layout, CPU), SCALE)
    return out, kv_cache


@pytest.mark.parametrize("layout", ALL_LAYOUTS.values(), ids=ALL_LAYOUTS.keys())
@pytest.mark.parametrize("make_backend", BACKENDS.values(), ids=BACKENDS.keys())
def test_forward_matches_naive_causal_attention(
    make_backend: Callable[[], AttentionBackend], layout: BatchLayout
) -> None:
    kv_cache, q, k, v = _random_step(layout, torch.float32)
    past = [  # what each request's earlier steps left in the cache
        (kv_cache[0, :, slots].transpose(0, 1), kv_cache[1, :, slots].transpose(0, 1))
        for slots in (
            [slot(table, p) for p in range(start)]
            for table, start in zip(layout.block_tables, layout.num_computed_tokens, strict=True)
        )
    ]

    out, kv_cache = _run(make_backend(), layout, torch.float32)

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
    assert torch.equal(kv_cache[0, :, slots].transpose(0, 1), k)
    assert torch.equal(kv_cache[1, :, slots].transpose(0, 1), v)


@pytest.mark.parametrize("layout", ALL_LAYOUTS.values(), ids=ALL_LAYOUTS.keys())
@pytest.mark.parametrize(
    "make_backend", [InPlaceAttentionBackend.built_here, PagedAttentionBackend]
)
def test_forward_in_bfloat16_stays_close_to_the_reference(
    make_backend: Callable[[], AttentionBackend], layout: BatchLayout
) -> None:
    out, _ = _run(make_backend(), layout, torch.bfloat16)
    reference, _ = _run(TorchSdpaBackend(), layout, torch.bfloat16)

    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference.float(), rtol=0.05, atol=0.05)


def test_paged_metadata_splits_decodes_from_prompt_chunks() -> None:
    layout = ALL_LAYOUTS["decodes_around_a_chunk"]

    metadata = PagedAttentionBackend().build_metadata(layout, CPU)

    (decodes,) = metadata.decodes
    assert decodes.rows is not None
    assert decodes.rows.tolist() == [0, 11, 12]  # the chunk holds rows 1..10
    assert decodes.block_table.tolist() == [[1, 2, 3], [6, 0, 0], [7, 8, 0]]
    assert decodes.key_mask.sum(dim=1).tolist() == [10, 1, 5]
    (chunk,) = metadata.chunks
    assert chunk.rows == slice(1, 11)
    assert chunk.context_len == 12
    assert not chunk.is_fresh  # it starts after 2 cached tokens
    (block,) = chunk.query_blocks
    assert block.num_keys == 12
    assert block.visible.sum(dim=1).tolist() == list(range(3, 13))


def test_paged_metadata_attends_a_short_chunk_after_cached_tokens_as_decodes() -> None:
    metadata = PagedAttentionBackend().build_metadata(ALL_LAYOUTS["a_verify_beside_decodes"], CPU)

    (decodes,) = metadata.decodes  # one query per verified position, as decoding would
    assert metadata.chunks == ()
    assert decodes.rows is None  # rows 0..4 in order
    assert decodes.key_mask.sum(dim=1).tolist() == [7, 8, 9, 10, 3]
    assert decodes.block_table.tolist() == [[20, 21, 22]] * 4 + [[23, 0, 0]]


def test_paged_metadata_groups_decodes_by_context_length() -> None:
    metadata = PagedAttentionBackend().build_metadata(ALL_LAYOUTS["decodes_of_mixed_lengths"], CPU)

    short, long = metadata.decodes
    assert short.rows is not None and short.rows.tolist() == [0, 2]
    assert short.block_table.tolist() == [[10], [15]]  # not padded to the long one's 65 blocks
    assert long.rows is not None and long.rows.tolist() == [1]
    assert long.block_table.tolist() == [list(range(100, 165))]


def test_paged_metadata_of_a_decode_only_step_needs_no_row_indices() -> None:
    metadata = PagedAttentionBackend().build_metadata(ALL_LAYOUTS["decodes"], CPU)

    (decodes,) = metadata.decodes
    assert decodes.rows is None
    assert metadata.chunks == ()


def test_paged_metadata_of_a_fresh_prompt_is_plainly_causal() -> None:
    metadata = PagedAttentionBackend().build_metadata(ALL_LAYOUTS["prompt"], CPU)

    assert metadata.decodes == ()
    (chunk,) = metadata.chunks
    assert chunk.is_fresh


def test_paged_metadata_cuts_a_long_chunk_into_query_blocks_of_bounded_scores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(paged, "MAX_SCORES_PER_HEAD", 48)  # 4 queries of a 12-token context
    layout = BatchLayout(
        query_lens=[10], num_computed_tokens=[2], block_tables=[[3, 5, 8]], block_size=4
    )

    (chunk,) = PagedAttentionBackend().build_metadata(layout, CPU).chunks

    assert [block.rows for block in chunk.query_blocks] == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert [block.num_keys for block in chunk.query_blocks] == [6, 10, 12]
    assert chunk.query_blocks[1].visible.sum(dim=1).tolist() == [7, 8, 9, 10]


@pytest.mark.parametrize("pieces", [[1, 19], [3, 17], [13, 7], [19, 1], [1] * 20], ids=str)
@pytest.mark.parametrize(
    "make_backend", [InPlaceAttentionBackend.built_here, PagedAttentionBackend]
)
def test_bfloat16_prompt_rows_do_not_depend_on_how_the_prompt_is_cut(
    make_backend: Callable[[], AttentionBackend], pieces: list[int]
) -> None:
    """A query's bits are the same whether its prompt is computed whole, in chunks or token by
    token (decode and chunk paths alike): what makes verified drafts exact and greedy output
    independent of load."""
    whole = _prompt_in_pieces(make_backend(), [20])

    cut = _prompt_in_pieces(make_backend(), pieces)

    assert torch.equal(cut, whole)


def _prompt_in_pieces(backend: AttentionBackend, pieces: list[int]) -> torch.Tensor:
    """A backend's output for a 20-token bfloat16 prompt computed in steps of these sizes,
    each step reading the keys and values the earlier ones wrote."""
    layout = BatchLayout(
        query_lens=[20],
        num_computed_tokens=[0],
        block_tables=[[4, 9, 2, 7, 11]],
        block_size=BLOCK_SIZE,
    )
    kv_cache, q, k, v = _random_step(layout, torch.bfloat16)
    out, start = [], 0
    for count in pieces:
        step = BatchLayout([count], [start], layout.block_tables, BLOCK_SIZE)
        rows = slice(start, start + count)
        metadata = backend.build_metadata(step, CPU)
        out.append(backend.forward(q[rows], k[rows], v[rows], kv_cache, metadata, SCALE))
        start += count
    return torch.cat(out)
