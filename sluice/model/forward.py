"""One forward pass of a model over scheduled requests and its paged KV cache: the part of a
step that the target model and a draft model share."""

from collections.abc import Sequence

import torch
from torch import nn

from sluice.model.attention.backend import AttentionBackend, BatchLayout
from sluice.model.step import ScheduledRequest


def forward_pass(
    model: nn.Module,
    backend: AttentionBackend,
    kv_caches: Sequence[torch.Tensor],
    block_size: int,
    requests: Sequence[ScheduledRequest],
    device: torch.device,
) -> torch.Tensor:
    """Write the K/V of every request's tokens into the cache and return the hidden states
    [num_tokens, hidden], requests in order."""
    layout = BatchLayout(
        query_lens=[len(r.token_ids) for r in requests],
        num_computed_tokens=[r.num_computed_tokens for r in requests],
        block_tables=[list(r.block_ids) for r in requests],
        block_size=block_size,
    )
    token_ids: list[int] = []
    positions: list[int] = []
    for r in requests:
        token_ids.extend(r.token_ids)
        start = r.num_computed_tokens
        positions.extend(range(start, start + len(r.token_ids)))
    metadata = backend.build_metadata(layout, device)
    return model(
        torch.tensor(token_ids, dtype=torch.long, device=device),
        torch.tensor(positions, dtype=torch.long, device=device),
        kv_caches,
        metadata,
    )
