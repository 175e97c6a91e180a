"""Chooses the next token of every sampling request in one batched pass.

Per-request settings become [num_rows] tensors and each stage of TGI's logits pipeline
(contract 6.1: watermark, repetition penalty, frequency penalty, grammar mask, temperature,
top-k, top-p, typical-p, choose) runs on the whole batch at once, or on the rows that use it;
a batch of plain greedy rows skips it all. Randomness comes from each request's own seeded
generator, drawn as exponential noise (argmax of p / noise samples from p), so a seed
reproduces a request. Logprobs and top tokens come from the processed distribution."""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sluice.model.sampling.logits_processors import (
    apply_penalties,
    apply_token_bitmask,
    apply_typical_p,
    apply_watermark,
)
from sluice.model.sampling.top_tokens import TopTokens, top_tokens
from sluice.sampling_params import SamplingParams


@dataclass(frozen=True, slots=True)
class TokenHistory:
    """What the penalties need about the sequences of the rows that use one."""

    rows: tuple[int, ...]
    """[num_penalised]: the rows of the batch these counts belong to."""
    counts: torch.Tensor
    """[num_penalised, vocab_size] int32: occurrences of each token in prompt + output."""
    sequence_lengths: torch.Tensor
    """[num_penalised] float32: tokens in each sequence (prompt + output so far)."""


@dataclass(frozen=True, slots=True)
class TokenMasks:
    """The tokens that the rows with a grammar may choose next."""

    rows: tuple[int, ...]
    """[num_constrained]: the rows of the batch these masks belong to."""
    bitmask: torch.Tensor
    """[num_constrained, ceil(vocab_size / 32)] int32: bit t % 32 of word t // 32 is set when
    token t is allowed."""


@dataclass(frozen=True, slots=True)
class SamplerOutput:
    token_ids: torch.Tensor
    """[num_rows] int64."""
    logprobs: torch.Tensor
    """[num_rows] float32: log-probability of each chosen token under the processed distribution."""
    top_tokens: TopTokens | None = None
    """Set when some row asked for `top_n_tokens`."""


class Sampler:
    def __call__(
        self,
        logits: torch.Tensor,
        params: Sequence[SamplingParams],
        generators: Sequence[torch.Generator | None],
        *,
        history: TokenHistory | None = None,
        previous_token_ids: Sequence[int] = (),
        allowed: TokenMasks | None = None,
    ) -> SamplerOutput:
        """logits: [num_rows, vocab_size] float32; one params/generator entry per row.
        `history` is required when a row has a penalty, `previous_token_ids` (the last token of
        each row's sequence) when a row has a watermark, `allowed` when a row has a grammar."""
        if allowed is None and all(
            not p.do_sample
            and p.top_n_tokens == 0
            and p.watermark is None
            and p.repetition_penalty == 1.0
            and p.frequency_penalty == 0.0
            for p in params
        ):  # plain greedy: attribute reads only, this runs every step
            token_ids = logits.argmax(dim=-1)
            return SamplerOutput(token_ids, _chosen_logprobs(logits, token_ids))
        adjusts = any(p.adjusts_logits for p in params)
        if adjusts or allowed is not None:
            logits = logits.clone()  # processed in place below; the caller's stay as they were
        if adjusts:
            _adjust(logits, params, history, previous_token_ids)
        if allowed is not None:  # after the penalties, before the warpers (contract 6.1)
            apply_token_bitmask(logits, allowed.rows, allowed.bitmask)
        if not all(p.is_greedy for p in params):
            logits = apply_warpers(logits, params)
            token_ids = _sample(logits, params, generators)
        else:
            token_ids = logits.argmax(dim=-1)
        log_probs = logits.log_softmax(dim=-1)
        chosen = log_probs.gather(-1, token_ids[:, None]).squeeze(-1)
        wanting = [row for row, p in enumerate(params) if p.top_n_tokens > 0]
        top = _top_tokens(log_probs, params, wanting) if wanting else None
        return SamplerOutput(token_ids, chosen, top)


def _adjust(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    history: TokenHistory | None,
    previous_token_ids: Sequence[int],
) -> torch.Tensor:
    """Watermark, then penalties, in place on `logits` (a copy the caller owns)."""
    marked = [row for row, p in enumerate(params) if p.watermark is not None]
    if marked:
        apply_watermark(
            logits,
            marked,
            [previous_token_ids[row] for row in marked],
            [w for p in params if (w := p.watermark) is not None],
        )
    if history is not None:
        rows = history.rows
        device = logits.device
        apply_penalties(
            logits,
            torch.tensor(rows, device=device),
            history.counts,
            history.sequence_lengths,
            torch.tensor([params[row].repetition_penalty for row in rows], device=device),
            torch.tensor([params[row].frequency_penalty for row in rows], device=device),
        )
    return logits


def _top_tokens(
    log_probs: torch.Tensor, params: Sequence[SamplingParams], rows: Sequence[int]
) -> TopTokens:
    """Top tokens of the rows that ask for them; the others get empty lists."""
    index = torch.tensor(rows, device=log_probs.device)
    found = top_tokens(log_probs[index], [params[row].top_n_tokens for row in rows])
    token_ids: list[list[int]] = [[] for _ in params]
    logprobs: list[list[float]] = [[] for _ in params]
    for row, row_ids, row_logprobs in zip(rows, found.token_ids, found.logprobs, strict=True):
        token_ids[row], logprobs[row] = row_ids, row_logprobs
    return TopTokens(token_ids, logprobs)


def apply_warpers(logits: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
    """Temperature, top-k, top-p, then typical-p; greedy rows pass through unchanged."""
    device = logits.device
    sampled = torch.tensor([not p.is_greedy for p in params], device=device)
    temperatures = torch.tensor([p.temperature for p in params], device=device)
    logits = logits / torch.where(sampled, temperatures, 1.0)[:, None]
    if any(p.top_k > 0 or p.top_p < 1.0 for p in params if not p.is_greedy):
        logits = _apply_top_k_top_p(logits, params, sampled)
    typical = [row for row, p in enumerate(params) if not p.is_greedy and p.typical_p < 1.0]
    if typical:
        rows = torch.tensor(typical, device=device)
        mass = torch.tensor([params[row].typical_p for row in typical], device=device)
        logits[rows] = apply_typical_p(logits[rows], mass)
    return logits


def _apply_top_k_top_p(
    logits: torch.Tensor, params: Sequence[SamplingParams], sampled: torch.Tensor
) -> torch.Tensor:
    device = logits.device
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
