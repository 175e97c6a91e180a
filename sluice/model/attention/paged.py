"""The default attention backend: reads the paged cache a block at a time and splits each step
into its decodes (one query per request, attended together) and its prompt chunks (attended
one request at a time), so that one long chunk never pads every decode of the step to its
length, as the reference backend does.

Keys and values are gathered with one `index_select` over whole blocks (a block is
`block_size` consecutive slots of every KV head), several times cheaper than gathering slot by
slot; with the cache's heads-first layout the gathered keys of each (head, request) pair form
one contiguous matrix that the batched matmuls read without another copy."""

from dataclasses import dataclass

import torch

from sluice.model.attention.backend import BatchLayout, slot_mapping_for, write_kv

MAX_QUERIES_AS_DECODES = 8
"""A request computing this few tokens after cached ones (a speculative verify, a short tail of
a prompt) attends like that many decodes, one query each over its own causal context, batched
with the step's other decodes."""
MAX_SCORES_PER_HEAD = 1 << 20
"""A prompt chunk attends in blocks of queries whose scores (queries x visible keys) stay
within this many per head: 4 MiB each in float32, whatever the prompt's length."""
SCORE_BYTES_LIVE_PER_PAIR = 16
"""`_attend` holds up to four float32 tensors of a query block's scores at once (the scores,
their scaled copy, the softmax and its cast): a bound for memory sizing."""
MAX_CONTEXT_RATIO_IN_A_GROUP = 2
MIN_PADDING_FOR_A_NEW_GROUP = 256
"""Decodes attend in groups of similar context length, each padded to its longest: one long
request then costs only its own group the padding to its length, not every request. A group
takes contexts up to twice its shortest, or up to this many tokens longer (padding that
short costs less than another group's matmuls)."""


@dataclass(frozen=True, slots=True)
class DecodeBatch:
    """Requests of a step that compute one token each and have contexts of similar length."""

    rows: torch.Tensor | None
    """[num_decodes] int64: their rows in the step's flattened tokens; None when they are the
    whole batch, in order."""
    block_table: torch.Tensor
    """[num_decodes, max_blocks] int64, padded with block 0 (masked out)."""
    key_mask: torch.Tensor
    """[num_decodes, max_blocks * block_size] bool: True where a slot holds context."""


@dataclass(frozen=True, slots=True)
class QueryBlock:
    """Consecutive queries of a prompt chunk, attended together over the keys they can see."""

    rows: slice
    """Its rows within the chunk."""
    num_keys: int
    """Keys 0..num_keys-1 of the context: up to and including its last query's position."""
    visible: torch.Tensor
    """[num_queries, num_keys] bool: True where a query sees a key (causal)."""


@dataclass(frozen=True, slots=True)
class PromptChunk:
    """One request computing several tokens: a prompt, or a chunk of one."""

    rows: slice
    """Its rows in the step's flattened tokens (a request's tokens are contiguous)."""
    block_ids: torch.Tensor
    """[num_blocks] int64: the blocks holding its context."""
    context_len: int
    is_fresh: bool
    """It starts at position 0: its keys are this step's own, no cache read needed."""
    query_blocks: tuple[QueryBlock, ...]


@dataclass(frozen=True, slots=True)
class PagedMetadata:
    slot_mapping: torch.Tensor
    """[num_tokens] int64."""
    block_size: int
    decodes: tuple[DecodeBatch, ...]
    chunks: tuple[PromptChunk, ...]


class PagedAttentionBackend:
    def build_metadata(self, layout: BatchLayout, device: torch.device) -> PagedMetadata:
        chunks: list[PromptChunk] = []
        queries: list[_Query] = []
        row = 0
        for index, (start, count) in enumerate(
            zip(layout.num_computed_tokens, layout.query_lens, strict=True)
        ):
            if count == 1 or (start > 0 and count <= MAX_QUERIES_AS_DECODES):
                queries += [_Query(index, row + j, start + j + 1) for j in range(count)]
            else:
                chunks.append(_prompt_chunk(layout, index, row, device))
            row += count
        groups = _group_by_context(queries)
        in_order = [query.row for query in queries] == list(range(row))
        if len(groups) == 1 and in_order:
            decodes = (_decode_batch(layout, groups[0], None, device),)
        else:
            decodes = tuple(
                _decode_batch(
                    layout, group, torch.tensor([q.row for q in group], device=device), device
                )
                for group in groups
            )
        return PagedMetadata(
            slot_mapping=torch.tensor(slot_mapping_for(layout), dtype=torch.long, device=device),
            block_size=layout.block_size,
            decodes=decodes,
            chunks=tuple(chunks),
        )

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        kv_cache: torch.Tensor,
        metadata: PagedMetadata,
        scale: float,
    ) -> torch.Tensor:
        write_kv(kv_cache, metadata.slot_mapping, k, v)
        key_cache, value_cache = kv_cache[0], kv_cache[1]
        # [kv_heads, num_blocks, block_size, head_dim]: a view, so gathers copy whole blocks.
        num_kv_heads, _, head_dim = key_cache.shape
        block_shape = (num_kv_heads, -1, metadata.block_size, head_dim)
        key_blocks, value_blocks = key_cache.view(block_shape), value_cache.view(block_shape)
        if len(metadata.decodes) == 1 and metadata.decodes[0].rows is None:
            return _decode_attention(q, key_blocks, value_blocks, metadata.decodes[0], scale)
        out = torch.empty_like(q)
        for decodes in metadata.decodes:
            assert decodes.rows is not None
            queries = q.index_select(0, decodes.rows)
            attended = _decode_attention(queries, key_blocks, value_blocks, decodes, scale)
            out.index_copy_(0, decodes.rows, attended)
        for chunk in metadata.chunks:
            rows = chunk.rows
            if chunk.is_fresh:  # its context is this step's k, v
                keys, values = k[rows].transpose(0, 1), v[rows].transpose(0, 1)
            else:
                keys = _gather_context(key_blocks, chunk)
                values = _gather_context(value_blocks, chunk)
            out[rows] = _chunk_attention(q[rows], keys, values, chunk.query_blocks, scale)
        return out

    def prompt_attention_bytes(self, num_heads: int, prompt_lengths: list[int]) -> int:
        """The visibility masks of every query block (a byte a query-key pair, all built with
        the step's metadata) and the largest block's scores, which stop growing with the
        prompt at `MAX_SCORES_PER_HEAD` per head."""
        masks = sum(length * length for length in prompt_lengths)
        longest = max(prompt_lengths, default=0)
        scores_per_head = min(longest * longest, MAX_SCORES_PER_HEAD)
        return masks + SCORE_BYTES_LIVE_PER_PAIR * num_heads * scores_per_head


@dataclass(frozen=True, slots=True)
class _Query:
    """One query attended the decode way: a request's row and the context it sees."""

    request: int
    row: int
    context_len: int


def _group_by_context(queries: list[_Query]) -> list[list[_Query]]:
    """The queries grouped by context length (see MAX_CONTEXT_RATIO_IN_A_GROUP); each group
    keeps batch order inside."""
    groups: list[list[_Query]] = []
    shortest = 0
    for query in sorted(queries, key=lambda query: query.context_len):
        length = query.context_len
        fits = length <= max(
            MAX_CONTEXT_RATIO_IN_A_GROUP * shortest, shortest + MIN_PADDING_FOR_A_NEW_GROUP
        )
        if not groups or not fits:
            groups.append([])
            shortest = length
        groups[-1].append(query)
    return [sorted(group, key=lambda query: query.row) for group in groups]


def _decode_batch(
    layout: BatchLayout, queries: list[_Query], rows: torch.Tensor | None, device: torch.device
) -> DecodeBatch:
    context_lens = [query.context_len for query in queries]
    size = layout.block_size
    max_blocks = -(-max(context_lens) // size)
    table = torch.zeros(len(queries), max_blocks, dtype=torch.long)
    for position, query in enumerate(queries):
        used = layout.block_tables[query.request][:max_blocks]
        table[position, : len(used)] = torch.tensor(used, dtype=torch.long)
    key_positions = torch.arange(max_blocks * size)
    key_mask = key_positions[None, :] < torch.tensor(context_lens)[:, None]
    return DecodeBatch(rows=rows, block_table=table.to(device), key_mask=key_mask.to(device))


def _prompt_chunk(
    layout: BatchLayout, index: int, first_row: int, device: torch.device
) -> PromptChunk:
    start, count = layout.num_computed_tokens[index], layout.query_lens[index]
    context_len = start + count
    num_blocks = -(-context_len // layout.block_size)
    block_ids = torch.tensor(layout.block_tables[index][:num_blocks], dtype=torch.long)
    block_len = max(1, MAX_SCORES_PER_HEAD // context_len)
    query_blocks = []
    for first in range(0, count, block_len):
        last = min(count, first + block_len)
        num_keys = start + last
        positions = torch.arange(start + first, num_keys)
        visible = torch.arange(num_keys)[None, :] <= positions[:, None]
        query_blocks.append(QueryBlock(slice(first, last), num_keys, visible.to(device)))
    return PromptChunk(
        rows=slice(first_row, first_row + count),
        block_ids=block_ids.to(device),
        context_len=context_len,
        is_fresh=start == 0,
        query_blocks=tuple(query_blocks),
    )


def _decode_attention(
    q: torch.Tensor,
    key_blocks: torch.Tensor,
    value_blocks: torch.Tensor,
    decodes: DecodeBatch,
    scale: float,
) -> torch.Tensor:
    """One query per request, attended over (KV head, request) pairs with the query heads of
    each KV head grouped (the CPU flash kernel is several times slower for a single masked
    query).

    q: [requests, heads, dim]. Returns [requests, heads, dim]."""
    num_requests, max_blocks = decodes.block_table.shape
    num_kv_heads, _, block_size, head_dim = key_blocks.shape
    context = max_blocks * block_size
    group = q.shape[1] // num_kv_heads
    flat_table = decodes.block_table.view(-1)
    pairs = num_kv_heads * num_requests
    keys = key_blocks.index_select(1, flat_table).view(pairs, context, head_dim)
    values = value_blocks.index_select(1, flat_table).view(pairs, context, head_dim)
    grouped_q = q.view(num_requests, num_kv_heads, group, head_dim).transpose(0, 1)
    queries = grouped_q.reshape(pairs, group, head_dim)
    out = _attend(queries, keys, values, decodes.key_mask, num_kv_heads, scale)
    out = out.view(num_kv_heads, num_requests, group, head_dim)
    return out.transpose(0, 1).reshape(num_requests, num_kv_heads * group, head_dim)


def _gather_context(blocks: torch.Tensor, chunk: PromptChunk) -> torch.Tensor:
    """[kv_heads, context_len, dim]: the chunk's context, read from the cache."""
    context = blocks.index_select(1, chunk.block_ids).flatten(1, 2)
    return context[:, : chunk.context_len]


def _chunk_attention(
    q: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    query_blocks: tuple[QueryBlock, ...],
    scale: float,
) -> torch.Tensor:
    """q: [query_len, heads, dim] of one request; keys, values: [kv_heads, context_len, dim].
    Each block of queries attends over the keys it can see, its query heads grouped per KV
    head. Returns [query_len, heads, dim]."""
    query_len, num_heads, head_dim = q.shape
    num_kv_heads = keys.shape[0]
    group = num_heads // num_kv_heads
    grouped_q = q.view(query_len, num_kv_heads, group, head_dim).transpose(0, 1)
    out = q.new_empty(num_kv_heads, query_len, group, head_dim)
    for block in query_blocks:
        queries = grouped_q[:, block.rows].reshape(num_kv_heads, -1, head_dim)
        keys_seen, values_seen = keys[:, : block.num_keys], values[:, : block.num_keys]
        attended = _attend(queries, keys_seen, values_seen, block.visible, num_kv_heads, scale)
        out[:, block.rows] = attended.view(num_kv_heads, -1, group, head_dim)
    return out.transpose(0, 1).reshape(query_len, num_heads, head_dim)


def _attend(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    visible: torch.Tensor,
    num_kv_heads: int,
    scale: float,
) -> torch.Tensor:
    """The arithmetic every query goes through, decoding or in a prompt chunk of any length:
    scores from a batched matmul in the cache dtype, a float32 softmax over the keys the query
    sees (as transformers' eager attention), a batched matmul with the values. In bfloat16
    these matmuls give a query row the same bits whatever rows and masked keys share the call,
    so a token's result does not depend on how the scheduler cut or batched its step: drafts
    verify exactly, and greedy output does not change with load. (The CPU flash kernel's
    results change with the query length.)

    queries: [batch, rows, dim] with batch = num_kv_heads * n and rows = m * group;
    keys, values: [batch, num_keys, dim]; visible: [n * m, num_keys] bool, the keys each of the
    n * m queries sees. Returns [batch, rows, dim]."""
    scores = torch.bmm(queries, keys.transpose(1, 2)).float()
    num_keys = keys.shape[1]
    grid = scores.view(num_kv_heads, visible.shape[0], -1, num_keys) * scale
    grid.masked_fill_(~visible[None, :, None, :], float("-inf"))
    probs = grid.softmax(dim=-1).to(values.dtype).view(-1, queries.shape[1], num_keys)
    return torch.bmm(probs, values)
