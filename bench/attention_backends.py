#!/usr/bin/env python3
"""Attention over the paged KV cache, one layer of the default model's shapes (9 query heads
over 3 KV heads of 64, blocks of 16 tokens scattered over the cache), per backend: gathering
the blocks then batched matmuls (attention/paged.py), the C++ kernel reading them in place
(attention/in_place.py), and FlexAttention compiled by inductor over the same cache with a
block mask from the page table (torch's own paged recipe). Decode steps at batch 1, 16 and 64
with 160, 1,000 and 4,000 tokens of context, and fresh prompts, in float32 and bfloat16.

Usage: .venv/bin/python bench/attention_backends.py [--samples 7] [--no-flex]
Writes bench/results/attention_backends_<cpu kind>.md: milliseconds per layer, median (min-max).
Nothing else heavy may run meanwhile."""

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

from sluice.bench.local_server import git_commit
from sluice.bench.machine import cpu_description, cpu_kind
from sluice.bench.stats import Spread
from sluice.model.attention.backend import AttentionBackend, BatchLayout
from sluice.model.attention.in_place import InPlaceAttentionBackend
from sluice.model.attention.paged import PagedAttentionBackend

ROOT = Path(__file__).resolve().parent.parent
NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, BLOCK_SIZE = 9, 3, 64, 16
DECODES = [(batch, context) for batch in (1, 16, 64) for context in (160, 1000, 4000)]
PROMPTS = (160, 1000, 4000)
MAX_SECONDS_PER_CASE = 3.0
FLEX_MAX_SLOTS = 64_000
"""Requests x context beyond which FlexAttention is not run: at 64 x 4,000 its CPU path asked
for 37.7 GB (float32) and bfloat16 exhausted this machine's memory."""

Step = Callable[[], torch.Tensor]


def _layout(batch: int, context: int, query_len: int) -> BatchLayout:
    """`batch` requests computing `query_len` tokens at the end of `context`, their blocks in
    random order over a cache that holds exactly them."""
    blocks_each = -(-context // BLOCK_SIZE)
    order = torch.randperm(batch * blocks_each).view(batch, blocks_each).tolist()
    return BatchLayout([query_len] * batch, [context - query_len] * batch, order, BLOCK_SIZE)


def _backend_step(backend: AttentionBackend, layout: BatchLayout, dtype: torch.dtype) -> Step:
    num_slots = sum(len(table) for table in layout.block_tables) * BLOCK_SIZE
    kv_cache = torch.randn(2, NUM_KV_HEADS, num_slots, HEAD_DIM).to(dtype)
    num_tokens = sum(layout.query_lens)
    q = torch.randn(num_tokens, NUM_HEADS, HEAD_DIM).to(dtype)
    k, v = (torch.randn(num_tokens, NUM_KV_HEADS, HEAD_DIM).to(dtype) for _ in range(2))
    metadata = backend.build_metadata(layout, torch.device("cpu"))
    return lambda: backend.forward(q, k, v, kv_cache, metadata, HEAD_DIM**-0.5)


def _flex_step(layout: BatchLayout, dtype: torch.dtype) -> Step:
    """FlexAttention decoding over the whole cache as one sequence of physical slots: each
    request's query row lists its own blocks in the block mask, and the mask function maps a
    physical slot back to its position in the request to apply causality."""
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    batch = len(layout.query_lens)
    num_blocks = sum(len(table) for table in layout.block_tables)
    num_slots = num_blocks * BLOCK_SIZE
    kv_cache = torch.randn(2, 1, NUM_KV_HEADS, num_slots, HEAD_DIM).to(dtype)
    q = torch.randn(batch, NUM_HEADS, 1, HEAD_DIM).to(dtype)
    tables = torch.tensor(layout.block_tables, dtype=torch.int32)
    blocks_each = tables.shape[1]
    logical = torch.full((batch, num_blocks), -1, dtype=torch.int64)
    logical.scatter_(1, tables.long(), torch.arange(blocks_each).expand(batch, -1).clone())
    context_lens = torch.tensor(layout.context_lens)

    def visible(b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv: torch.Tensor):
        position = logical[b, kv // BLOCK_SIZE] * BLOCK_SIZE + kv % BLOCK_SIZE
        return (position >= 0) & (position < context_lens[b])

    # The blocks a context fills are "full" (no mask to evaluate); its last one is partial.
    full = blocks_each - (context_lens % BLOCK_SIZE != 0).int()
    partial = blocks_each - full
    full_indices = torch.zeros(batch, 1, 1, num_blocks, dtype=torch.int32)
    full_indices[:, 0, 0, :blocks_each] = tables
    partial_indices = torch.zeros(batch, 1, 1, num_blocks, dtype=torch.int32)
    partial_indices[:, 0, 0, 0] = tables[:, -1]
    mask = BlockMask.from_kv_blocks(
        partial.view(batch, 1, 1).int(),
        partial_indices,
        full.view(batch, 1, 1).int(),
        full_indices,
        BLOCK_SIZE=(1, BLOCK_SIZE),
        mask_mod=visible,
        seq_lengths=(1, num_slots),
    )
    attend = torch.compile(flex_attention, dynamic=False)
    keys, values = kv_cache[0].expand(batch, -1, -1, -1), kv_cache[1].expand(batch, -1, -1, -1)

    def step() -> torch.Tensor:
        return attend(q, keys, values, block_mask=mask, enable_gqa=True)

    _check_first_request(step(), q, kv_cache, layout)
    return step


def _check_first_request(
    out: torch.Tensor, q: torch.Tensor, kv_cache: torch.Tensor, layout: BatchLayout
) -> None:
    """FlexAttention's answer for request 0 is plain attention over its context's slots."""
    context = layout.context_lens[0]
    positions = torch.arange(context)
    table = torch.tensor(layout.block_tables[0])
    slots = table[positions // BLOCK_SIZE] * BLOCK_SIZE + positions % BLOCK_SIZE
    keys = kv_cache[0, 0, :, slots].double().repeat_interleave(NUM_HEADS // NUM_KV_HEADS, 0)
    values = kv_cache[1, 0, :, slots].double().repeat_interleave(NUM_HEADS // NUM_KV_HEADS, 0)
    weights = (keys @ q[0, :, 0, :, None].double() * HEAD_DIM**-0.5).softmax(1)
    expected = (weights.transpose(1, 2) @ values)[:, 0]
    torch.testing.assert_close(out[0, :, 0].double(), expected, rtol=2e-2, atol=2e-2)


def _time_ms(step: Step, samples: int) -> Spread:
    step()  # first-call costs (a compile, a warm cache)
    times: list[float] = []
    deadline = time.perf_counter() + MAX_SECONDS_PER_CASE
    while len(times) < samples and (len(times) < 3 or time.perf_counter() < deadline):
        started = time.perf_counter()
        step()
        times.append((time.perf_counter() - started) * 1e3)
    return Spread.of(times)


def _flex_time(layout: BatchLayout, dtype: torch.dtype, samples: int) -> Spread | str:
    if layout.query_lens[0] != 1:
        return "not measured (decodes only)"
    if len(layout.query_lens) * layout.context_lens[0] > FLEX_MAX_SLOTS:
        return "not run (out of memory)"
    try:
        return _time_ms(_flex_step(layout, dtype), samples)
    except Exception as error:  # inductor refuses some shapes on CPU
        reason = str(error).strip().splitlines()[0][:80]
        print(f"FlexAttention failed: {reason}", flush=True)
        return f"failed: {reason}"


def _cell(spread: Spread | str, baseline: Spread) -> str:
    if isinstance(spread, str):
        return spread
    digits = 3 if spread.median < 1 else 2
    return f"{spread.format(digits)}, {baseline.median / spread.median:.1f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=7)
    parser.add_argument("--no-flex", action="store_true", help="skip FlexAttention")
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results")
    args = parser.parse_args()
    gather, in_place = PagedAttentionBackend(), InPlaceAttentionBackend.built_here()
    torch.manual_seed(0)
    lines = [
        "# Attention over the paged KV cache, per backend",
        "",
        f"Commit {git_commit()}, torch {torch.__version__}, {cpu_description()}. One layer of "
        f"the default model's shapes ({NUM_HEADS} query heads over {NUM_KV_HEADS} KV heads of "
        f"{HEAD_DIM}, blocks of {BLOCK_SIZE} in random order), new keys written included. "
        f"Milliseconds per call, median (min-max) of up to {args.samples} calls, and speed "
        "against gathering. Produced by `bench/attention_backends.py`.",
        "",
        "| dtype | step | gather + matmuls | in place (C++) | FlexAttention (inductor) |",
        "|---|---|---|---|---|",
    ]
    cases = [(f"decode, batch {b}, context {c}", _layout(b, c, 1)) for b, c in DECODES]
    cases += [(f"prompt of {n}", _layout(1, n, n)) for n in PROMPTS]
    for dtype in (torch.float32, torch.bfloat16):
        for name, layout in cases:
            baseline = _time_ms(_backend_step(gather, layout, dtype), args.samples)
            ours = _time_ms(_backend_step(in_place, layout, dtype), args.samples)
            flex = _flex_time(layout, dtype, args.samples) if not args.no_flex else "not run"
            row = [str(dtype).removeprefix("torch."), name]
            row += [baseline.format(3 if baseline.median < 1 else 2), _cell(ours, baseline)]
            row.append(_cell(flex, baseline))
            lines.append("| " + " | ".join(row) + " |")
            print(lines[-1], flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / f"attention_backends_{cpu_kind()}.md"
    path.write_text("\n".join([*lines, ""]))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
