"""The most likely alternatives at a generated position (TGI's `top_n_tokens`), from the
processed distribution the token was chosen from.

As in TGI, a row asking for n gets every token whose logprob reaches the n-th highest one, so
ties at the edge are all kept (possibly more than n), and tokens filtered out (-inf) never are
(possibly fewer than n)."""

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True, slots=True)
class TopTokens:
    """One list per row, best first; empty for rows that asked for none."""

    token_ids: list[list[int]]
    logprobs: list[list[float]]


def top_tokens(log_probs: torch.Tensor, top_n: Sequence[int]) -> TopTokens:
    """log_probs: [num_rows, vocab_size] float32; top_n: how many each row asks for."""
    num_rows, vocab_size = log_probs.shape
    wanted = [min(n, vocab_size) for n in top_n]
    max_n = max(wanted, default=0)
    if max_n == 0:
        return TopTokens([[] for _ in range(num_rows)], [[] for _ in range(num_rows)])
    device = log_probs.device
    best = log_probs.topk(max_n, dim=-1).values  # [num_rows, max_n], sorted
    wanted_n = torch.tensor(wanted, device=device)
    threshold = best.gather(-1, (wanted_n - 1).clamp(min=0)[:, None])  # [num_rows, 1]: n-th best
    threshold = threshold.clamp(min=torch.finfo(log_probs.dtype).min)  # never keep -inf
    num_kept = (log_probs >= threshold).sum(dim=-1)  # [num_rows], >= n with ties
    num_kept = torch.where(wanted_n > 0, num_kept, 0).tolist()
    values, ids = log_probs.topk(max(num_kept), dim=-1)  # [num_rows, most kept], sorted
    all_ids, all_values = ids.tolist(), values.tolist()
    return TopTokens(
        [row_ids[:count] for row_ids, count in zip(all_ids, num_kept, strict=True)],
        [row_values[:count] for row_values, count in zip(all_values, num_kept, strict=True)],
    )
