"""Batched logits processors with TGI's semantics: watermark, repetition and frequency
penalties (which change the scores), the grammar mask, and locally typical filtering (a
warper).

Each function works on rows of a [num_rows, vocab_size] float32 tensor and touches only the
rows it is given; none loops over the vocabulary. Callers own the order (contract 6.1)."""

from collections.abc import Sequence

import torch

from sluice.sampling_params import Watermark

WATERMARK_HASH_KEY = 15485863
"""Multiplier of the previous token id in the green-list seed, as in TGI and the paper's code."""


def apply_watermark(
    logits: torch.Tensor,
    rows: Sequence[int],
    previous_token_ids: Sequence[int],
    watermarks: Sequence[Watermark],
) -> None:
    """Add each watermark's delta to its green list, in place. The green list of a row is the
    first gamma x vocab_size ids of a permutation drawn on the logits' device from a generator
    seeded with hash_key x previous token: the same list TGI draws on the same device type."""
    vocab_size = logits.shape[-1]
    device = logits.device
    generator = torch.Generator(device=device)
    permutations = []  # one randperm per row: the seed differs by row, the draw cannot batch
    for previous in previous_token_ids:
        generator.manual_seed(WATERMARK_HASH_KEY * previous)
        permutations.append(torch.randperm(vocab_size, generator=generator, device=device))
    order = torch.stack(permutations)  # [num_rows_marked, vocab_size] int64
    ranks = torch.empty_like(order).scatter_(
        1, order, torch.arange(vocab_size, device=device).expand_as(order)
    )  # ranks[i, token] = place of token in row i's permutation
    green_sizes = torch.tensor([int(vocab_size * w.gamma) for w in watermarks], device=device)
    deltas = torch.tensor([w.delta for w in watermarks], device=device)
    row_index = torch.tensor(list(rows), device=device)
    bias = torch.where(ranks < green_sizes[:, None], deltas[:, None], 0.0)
    logits.index_add_(0, row_index, bias)


def apply_penalties(
    logits: torch.Tensor,
    rows: torch.Tensor,
    counts: torch.Tensor,
    sequence_lengths: torch.Tensor,
    repetition: torch.Tensor,
    frequency: torch.Tensor,
) -> None:
    """Repetition then frequency penalty on `rows` of `logits`, in place.

    rows: [num_penalised] int64; counts: [num_penalised, vocab_size] int32, how often each
    token occurs in the sequence (prompt + output); sequence_lengths, repetition, frequency:
    [num_penalised] float32. A repetition penalty of 1.0 and a frequency penalty of 0.0 are
    no-ops, so rows that use only one of them share the same kernels."""
    scores = logits[rows]  # [num_penalised, vocab_size]
    penalty = repetition[:, None]
    penalised = torch.where(scores < 0, scores * penalty, scores / penalty)
    scores = torch.where(counts > 0, penalised, scores)
    # TGI's length-normalised frequency penalty: count / length, then times the penalty.
    frequencies = counts.to(scores.dtype) / sequence_lengths[:, None]
    scores -= frequencies * frequency[:, None]
    logits[rows] = scores


def apply_token_bitmask(logits: torch.Tensor, rows: Sequence[int], bitmask: torch.Tensor) -> None:
    """Set the logits of the tokens a grammar forbids to -inf on `rows`, in place.

    bitmask: [len(rows), ceil(vocab_size / 32)] int32, on any device; bit t % 32 of word t // 32
    set means token t is allowed."""
    device = logits.device
    vocab_size = logits.shape[-1]
    bitmask = bitmask.to(device, non_blocking=True)
    shifts = torch.arange(32, dtype=torch.int32, device=device)
    forbidden = ((bitmask[:, :, None] >> shifts) & 1).eq(0).flatten(1)[:, :vocab_size]
    index = torch.tensor(list(rows), device=device)
    logits[index] = logits[index].masked_fill(forbidden, float("-inf"))


def apply_typical_p(logits: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    """Locally typical filtering (Meister et al., arXiv:2202.00666) with transformers'
    TypicalLogitsWarper semantics: keep the tokens whose surprisal is closest to the entropy
    until their probability reaches `mass`, always at least one.

    logits: [num_rows, vocab_size]; mass: [num_rows] float32, 1.0 leaves a row unchanged.
    Returns new logits with the dropped tokens at -inf."""
    vocab_size = logits.shape[-1]
    log_probs = logits.log_softmax(dim=-1)
    entropy = -(log_probs * log_probs.exp()).nansum(dim=-1, keepdim=True)  # [num_rows, 1]
    shifted = (-log_probs - entropy).abs()
    sorted_shifted, sorted_ids = shifted.sort(dim=-1)
    cumulative = logits.gather(-1, sorted_ids).softmax(dim=-1).cumsum(dim=-1)
    last = (cumulative < mass[:, None]).sum(dim=-1).clamp_(max=vocab_size - 1)
    last = torch.where(mass < 1.0, last, vocab_size - 1)
    drop_sorted = sorted_shifted > sorted_shifted.gather(-1, last[:, None])
    drop_sorted[:, 0] = False
    drop = drop_sorted.scatter(-1, sorted_ids, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))
