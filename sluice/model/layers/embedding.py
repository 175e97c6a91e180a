"""Token embedding and LM head, vocabulary split across shards."""

import torch
import torch.nn.functional as F
from torch import nn

from sluice.distributed.parallel_context import ParallelContext
from sluice.model.layers.linear import dense_linear, expect_shape


class VocabParallelEmbedding(nn.Module):
    """Each shard holds a contiguous slice of the vocabulary; lookups outside it give zeros,
    and an all-reduce completes every row."""

    def __init__(
        self, vocab_size: int, hidden_size: int, *, parallel: ParallelContext, dtype: torch.dtype
    ) -> None:
        super().__init__()
        self.parallel = parallel
        self.vocab_size = vocab_size
        self.num_shard_rows = -(-vocab_size // parallel.tp_size)
        self.vocab_start = parallel.tp_rank * self.num_shard_rows
        self.weight = nn.Parameter(
            torch.zeros(self.num_shard_rows, hidden_size, dtype=dtype), False
        )
        self.weight.weight_loader = self.weight_loader  # type: ignore[attr-defined]

    def weight_loader(
        self, param: nn.Parameter, loaded: torch.Tensor, shard_id: str | int | None = None
    ) -> None:
        expect_shape(loaded, (self.vocab_size, param.shape[1]))
        rows = min(self.num_shard_rows, self.vocab_size - self.vocab_start)
        param.data[:rows].copy_(loaded.narrow(0, self.vocab_start, rows))

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        if self.parallel.tp_size == 1:
            return F.embedding(token_ids, self.weight)
        local = token_ids - self.vocab_start
        in_shard = (local >= 0) & (local < self.num_shard_rows)
        out = F.embedding(local.clamp(0, self.num_shard_rows - 1), self.weight)
        out = out * in_shard.unsqueeze(-1)
        return self.parallel.all_reduce(out)


class ParallelLMHead(VocabParallelEmbedding):
    """Projects hidden states to vocabulary logits; may share its weight with the embedding."""

    packed_weight: nn.Parameter | None
    """The C++ linear kernel's packing of a weight shared with the embedding, whose lookups
    need it as it is (see model/kernel_packing.py)."""

    def __init__(
        self, vocab_size: int, hidden_size: int, *, parallel: ParallelContext, dtype: torch.dtype
    ) -> None:
        super().__init__(vocab_size, hidden_size, parallel=parallel, dtype=dtype)
        self.register_parameter("packed_weight", None)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.weight if self.packed_weight is None else self.packed_weight
        logits = dense_linear(hidden, weight)  # [num_rows, shard vocab]
        logits = self.parallel.all_gather_last_dim(logits)
        return logits[:, : self.vocab_size]
