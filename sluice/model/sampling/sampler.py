"""Chooses the next token of every sampling request in one batched pass.

Per-request settings become [num_rows] tensors; filtering (temperature, top-k, top-p) runs on
the whole batch at once. Randomness comes from each request's own seeded generator, drawn as
exponential noise (argmax of p / noise samples from p), so a seed reproduces a request."""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sluice.sampling_params import SamplingParams


@dataclass(frozen=True, slots=True)
class SamplerOutput:
    token_ids: torch.Tensor
    """[num_rows] int64."""
    logprobs: torch.Tensor
    """[num_rows] float32: log-probability of each chosen token under the processed distribution."""


class Sampler:
    def __call__(
        self,
        logits: torch.Tensor,
        params: Sequence[SamplingParams],
        generators: Sequence[torch.Generator | None],
    ) -> SamplerOutput:
        """logits: [num_rows, vocab_size] float32; one params/generator entry per row."""
        if all(p.is_greedy for p in params):
            token_ids = logits.argmax(dim=-1)
            return SamplerOutput(token_ids, _chosen_logprobs(logits, token_ids))
        processed = _apply_filters(logits, params)
        token_ids = _sample(processed, params, generators)
        return SamplerOutput(token_ids, _chosen_logprobs(processed, token_ids))


def _apply_filters(logits: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
    device = logits.device
    sampled = torch.tensor([not p.is_greedy for p in params], device=device)
    temperatures = torch.tensor([p.temperature for p in params], device=device)
    logits = logits / torch.where(sampled, temperatures, 1.0)[:, None]
    if not any(p.top_k > 0 or p.top_p < 1.0 for p in params if not p.is_greedy):
        return logits
    vocab_size = logits.shape[-1]
    top_k = torch.tensor([p.top_k or vocab_size for p in params], device=device)
    top_p = torch.tensor([p.top_p for p in params], device=device)
    top_k = torch.where(sampled, top_k, vocab_size)
    top_p = torch.where(sampled, top_p, 1.0)
    sorted_logits, sorted_ids = logits.sort(dim=-1, descending=True)
    ranks = torch.arange(vocab_size, device=device)
    drop = ranks[None, :] >= top_k[:, None]
    probs = sorted_logits.masked_fill(drop, float("-inf")).softmax(dim=-1)
    # Keep the smallest prefix whose probability reaches top_p: drop a token once the mass
    # before it already does. The most likely token is always kept.
    mass_before = probs.cumsum(dim=-1) - probs
    drop |= (mass_before >= top_p[:, None]) & (ranks[None, :] > 0)
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, sorted_ids, sorted_logits)


def _sample(
    processed: torch.Tensor,
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator | None],
) -> torch.Tensor:
    token_ids = processed.argmax(dim=-1)
    probs = processed.softmax(dim=-1)
    for row, (p, generator) in enumerate(zip(params, generators, strict=True)):
        if p.is_greedy:
            continue
        noise = torch.empty_like(probs[row]).exponential_(generator=generator)
        token_ids[row] = (probs[row] / noise).argmax()
    return token_ids


def _chosen_logprobs(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    return logits.log_softmax(dim=-1).gather(-1, token_ids[:, None]).squeeze(-1)
