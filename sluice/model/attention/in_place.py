"""The CPU attention backend: a C++ kernel (model/kernels/paged_attention.cpp) reads each request's
keys and values in the paged cache where they lie, with no gathered copy; gathering cost more
than the attention itself (in float32 at batch 64, 160 tokens of context: 104 ms of a 428 ms
step). Every token is attended the same way, decode or prompt, alone or in any batch, so its
result depends on nothing but its own query and context: greedy output does not change with
load, in any dtype.

Where the kernel cannot be built (no compiler) or the device is not a CPU, the gathering
backend (paged.py) serves instead."""

from dataclasses import dataclass

import torch

from sluice.model.attention.backend import AttentionBackend, BatchLayout, slot_mapping_for
from sluice.model.attention.paged import PagedAttentionBackend
from sluice.model.kernels import cpu_kernels


@dataclass(frozen=True, slots=True)
class InPlaceMetadata:
    slot_mapping: torch.Tensor
    """[num_tokens] int64."""
    block_size: int
    block_tables: torch.Tensor
    """[num_requests, max_blocks] int32, padded with block 0 (never read)."""
    row_requests: torch.Tensor
    """[num_tokens] int32: each token's request, its row in `block_tables`."""
    context_lens: torch.Tensor
    """[num_tokens] int32: the keys each token sees, itself included (causal)."""


class InPlaceAttentionBackend:
    def __init__(self, kernels: torch._ops._OpNamespace) -> None:
        """`kernels`: the library of model/kernels, built for this CPU."""
        self.attend = kernels.paged_attention
        self.write_kv = kernels.write_kv

    @classmethod
    def built_here(cls) -> "InPlaceAttentionBackend":
        """With the kernels built for this CPU; raises where they cannot be (for tests and
        benchmarks, which must not measure the fallback unawares)."""
        kernels = cpu_kernels()
        if kernels is None:
            raise RuntimeError("the C++ attention kernel could not be built (see the log)")
        return cls(kernels)

    def build_metadata(self, layout: BatchLayout, device: torch.device) -> InPlaceMetadata:
        max_blocks = max(len(table) for table in layout.block_tables)
        padded = [table + [0] * (max_blocks - len(table)) for table in layout.block_tables]
        row_requests, context_lens = [], []
        for request, (start, count) in enumerate(
            zip(layout.num_computed_tokens, layout.query_lens, strict=True)
        ):
            row_requests += [request] * count
            context_lens += range(start + 1, start + count + 1)
        return InPlaceMetadata(
            slot_mapping=torch.tensor(slot_mapping_for(layout), dtype=torch.long, device=device),
            block_size=layout.block_size,
            block_tables=torch.tensor(padded, dtype=torch.int32, device=device),
            row_requests=torch.tensor(row_requests, dtype=torch.int32, device=device),
            context_lens=torch.tensor(context_lens, dtype=torch.int32, device=device),
        )

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        kv_cache: torch.Tensor,
        metadata: InPlaceMetadata,
        scale: float,
    ) -> torch.Tensor:
        self.write_kv(k, v, kv_cache, metadata.slot_mapping)
        return self.attend(
            q.contiguous(),
            kv_cache[0],
            kv_cache[1],
            metadata.block_tables,
            metadata.row_requests,
            metadata.context_lens,
            metadata.block_size,
            scale,
        )

    def prompt_attention_bytes(self, num_heads: int, prompt_lengths: list[int]) -> int:
        """Each thread's scratch: at most a float a head and two row pointers a key."""
        per_key = 4 * num_heads + 16
        return torch.get_num_threads() * per_key * max(prompt_lengths, default=0)


def attention_backend_for(device: torch.device) -> AttentionBackend:
    """The in-place kernel on a CPU where it builds; the gathering backend otherwise."""
    if device.type == "cpu":
        kernels = cpu_kernels()
        if kernels is not None:
            return InPlaceAttentionBackend(kernels)
    return PagedAttentionBackend()
