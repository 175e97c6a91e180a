"""Verifies draft tokens against the target model: which drafts a request keeps, and the one
token the target adds after them, for a whole batch at once.

Terms. A request brings n >= 0 *draft* tokens, guessed cheaply (n-gram, draft model). The
target model scores n + 1 positions in one forward pass: row j holds its distribution for the
token after drafts 0..j-1, so it judges draft j, and row n the token after all of them. Drafts
are *accepted* left to right until the first one that is rejected; the token emitted in its
place is the *recovered* token. When all n are accepted, row n gives a *bonus* token. Either
way a request emits num_accepted + 1 tokens (1..n+1), as TGI does with `--speculate`.

Greedy requests accept a draft while it equals the target's argmax, so their tokens are
exactly those of decoding without drafts. Sampled requests use speculative sampling (Leviathan
et al., arXiv:2211.17192; Chen et al., arXiv:2302.01318): accept draft x with probability
min(1, p(x) / q(x)), else recover from max(0, p - q) renormalised, so every emitted token is
distributed as a sample from the target's p. q is the draft model's distribution, or a point
mass on x when the drafts are deterministic (n-gram, greedy draft model): then acceptance is
p(x) and recovery samples p without x.

Nothing here knows about the KV cache: the caller discards the positions of rejected drafts."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import torch

from sluice.sampling_params import SamplingParams


@dataclass(frozen=True, slots=True)
class VerifiedTokens:
    """What each request keeps from one verify step, in request order."""

    token_ids: list[list[int]]
    """Per request: its accepted drafts, then the recovered or bonus token (1..n+1 tokens)."""
    logprobs: list[list[float]]
    """Log-probability of each of those tokens under the target's processed distribution."""
    num_accepted: list[int]
    """Drafts accepted per request (0..n): len(token_ids[i]) - 1."""


def verify_drafts(
    logits: torch.Tensor,
    draft_token_ids: Sequence[Sequence[int]],
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator | None],
    draft_probs: torch.Tensor | None = None,
) -> VerifiedTokens:
    """Accept or reject every request's drafts and choose the token that follows them.

    logits: [num_rows, vocab_size] float32, the target's logits after the whole logits pipeline
    (penalties, grammar mask, temperature, top-k, top-p, typical-p), as the Sampler would
    choose from them; request i owns len(draft_token_ids[i]) + 1 consecutive rows, in request
    order. params, generators: one per request, as the Sampler takes them (only `is_greedy` is
    read here). draft_probs: [num_draft_tokens, vocab_size], the distribution each draft was
    drawn from, drafts in the same flat order; None when every draft was chosen
    deterministically (a point mass).

    Each sampled request draws from its own generator, in this order: one uniform per draft,
    then one exponential per vocabulary entry (the Sampler's noise). So a seed reproduces a
    request, and a request without drafts gets the very token the Sampler would give it."""
    if not len(draft_token_ids) == len(params) == len(generators):
        raise ValueError("verify_drafts needs one drafts, params and generator entry per request")
    layout = _Layout.build(draft_token_ids, params, logits.device)
    if logits.shape[0] != layout.num_rows:
        raise ValueError(f"logits have {logits.shape[0]} rows, the drafts need {layout.num_rows}")
    uniforms, noise = _draws(layout, generators, logits)
    log_norm = logits.logsumexp(dim=-1)  # [num_rows]
    passed = _passes(logits, log_norm, layout, uniforms, draft_probs)
    num_accepted = _leading_true(passed, layout)
    final_rows = [first + n for first, n in zip(layout.first_rows, num_accepted, strict=True)]
    final_tokens = logits[torch.tensor(final_rows, device=logits.device)].argmax(dim=-1)
    if layout.sampled_requests:
        final_tokens[torch.tensor(layout.sampled_requests, device=logits.device)] = _recover(
            logits, layout, num_accepted, final_rows, draft_probs, noise
        )
    return _collect(logits, log_norm, layout, num_accepted, final_tokens.tolist())


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where each request's rows and drafts sit in the flat batch."""

    num_drafts: list[int]
    first_rows: list[int]
    """Per request: its first logits row. Its first draft sits at first_rows[i] - i."""
    sampled_requests: list[int]
    """The requests that sample (not greedy), in order."""
    draft_token_ids: Sequence[Sequence[int]]
    drafts: torch.Tensor
    """[num_draft_tokens] int64: all drafts, flat."""
    draft_rows: torch.Tensor
    """[num_draft_tokens] int64: the logits row that judges each draft."""
    draft_sampled: torch.Tensor
    """[num_draft_tokens] bool: the draft belongs to a sampled request."""

    @property
    def num_rows(self) -> int:
        return sum(self.num_drafts) + len(self.num_drafts)

    @classmethod
    def build(
        cls,
        draft_token_ids: Sequence[Sequence[int]],
        params: Sequence[SamplingParams],
        device: torch.device,
    ) -> Self:
        num_drafts = [len(drafts) for drafts in draft_token_ids]
        first_rows = [0] * len(num_drafts)
        for i in range(1, len(num_drafts)):
            first_rows[i] = first_rows[i - 1] + num_drafts[i - 1] + 1
        rows = [
            first + j for first, n in zip(first_rows, num_drafts, strict=True) for j in range(n)
        ]
        drafts = [token_id for request_drafts in draft_token_ids for token_id in request_drafts]
        sampled = [not p.is_greedy for p in params]
        draft_sampled = [s for s, n in zip(sampled, num_drafts, strict=True) for _ in range(n)]
        return cls(
            num_drafts=num_drafts,
            first_rows=first_rows,
            sampled_requests=[i for i, s in enumerate(sampled) if s],
            draft_token_ids=draft_token_ids,
            drafts=torch.tensor(drafts, dtype=torch.int64, device=device),
            draft_rows=torch.tensor(rows, dtype=torch.int64, device=device),
            draft_sampled=torch.tensor(draft_sampled, dtype=torch.bool, device=device),
        )


def _draws(
    layout: _Layout, generators: Sequence[torch.Generator | None], logits: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniforms [num_draft_tokens] (left at 0 for greedy requests) and exponential noise
    [num_sampled_requests, vocab_size], drawn request by request from each one's generator."""
    device = logits.device
    uniforms = torch.zeros(sum(layout.num_drafts), device=device)
    noise = logits.new_empty(len(layout.sampled_requests), logits.shape[-1])
    for row, request in enumerate(layout.sampled_requests):
        generator = generators[request]
        start = layout.first_rows[request] - request
        count = layout.num_drafts[request]
        uniforms[start : start + count] = torch.rand(count, generator=generator, device=device)
        noise[row].exponential_(generator=generator)
    return uniforms, noise


def _passes(
    logits: torch.Tensor,
    log_norm: torch.Tensor,
    layout: _Layout,
    uniforms: torch.Tensor,
    draft_probs: torch.Tensor | None,
) -> torch.Tensor:
    """[num_draft_tokens] bool: whether each draft passes its own test, whatever came before."""
    drafts = layout.drafts[:, None]
    judged = logits[layout.draft_rows]  # [num_draft_tokens, vocab_size]
    is_argmax = judged.argmax(dim=-1) == layout.drafts
    target_p = (judged.gather(-1, drafts).squeeze(-1) - log_norm[layout.draft_rows]).exp()
    draft_q = draft_probs.gather(-1, drafts).squeeze(-1) if draft_probs is not None else 1.0
    # u < p / q without dividing; never accepts a token the target rules out (p = 0).
    is_lucky = uniforms * draft_q < target_p
    return torch.where(layout.draft_sampled, is_lucky, is_argmax)


def _leading_true(passed: torch.Tensor, layout: _Layout) -> list[int]:
    """Per request, how many of its drafts pass before the first that fails."""
    flags = passed.tolist()  # a few per request: cheaper on the CPU than as a padded grid
    counts: list[int] = []
    start = 0
    for num_drafts in layout.num_drafts:
        count = 0
        while count < num_drafts and flags[start + count]:
            count += 1
        counts.append(count)
        start += num_drafts
    return counts


def _recover(
    logits: torch.Tensor,
    layout: _Layout,
    num_accepted: Sequence[int],
    final_rows: Sequence[int],
    draft_probs: torch.Tensor | None,
    noise: torch.Tensor,
) -> torch.Tensor:
    """The recovered or bonus token of each sampled request: [num_sampled_requests] int64.

    After a rejection the token comes from max(0, p - q) (p without the rejected draft when q
    is a point mass); after full acceptance, from p. Sampling divides by exponential noise and
    takes the argmax, which needs no normalisation."""
    device = logits.device
    requests = layout.sampled_requests
    rows = torch.tensor([final_rows[i] for i in requests], device=device)
    probs = logits[rows].softmax(dim=-1)  # [num_sampled_requests, vocab_size]
    rejected = [num_accepted[i] < layout.num_drafts[i] for i in requests]
    if any(rejected):
        # The flat index of each request's first rejected draft (any valid index if none).
        index = [
            layout.first_rows[i] - i + num_accepted[i] if r else 0
            for i, r in zip(requests, rejected, strict=True)
        ]
        index_t = torch.tensor(index, device=device)
        if draft_probs is None:
            residual = probs.scatter(-1, layout.drafts[index_t][:, None], 0.0)
        else:
            residual = (probs - draft_probs[index_t]).clamp_(min=0.0)
        # An empty residual only arises from rounding where p == q: fall back to p.
        usable = torch.tensor(rejected, device=device)[:, None] & (residual.sum(-1, True) > 0)
        probs = torch.where(usable, residual, probs)
    return (probs / noise).argmax(dim=-1)


def _collect(
    logits: torch.Tensor,
    log_norm: torch.Tensor,
    layout: _Layout,
    num_accepted: Sequence[int],
    final_tokens: Sequence[int],
) -> VerifiedTokens:
    token_ids = [
        [*drafts[:n], final]
        for drafts, n, final in zip(layout.draft_token_ids, num_accepted, final_tokens, strict=True)
    ]
    rows = [
        first + j
        for first, n in zip(layout.first_rows, num_accepted, strict=True)
        for j in range(n + 1)
    ]
    device = logits.device
    rows_t = torch.tensor(rows, device=device)
    flat_ids = torch.tensor([t for ids in token_ids for t in ids], device=device)
    flat_logprobs = (logits[rows_t, flat_ids] - log_norm[rows_t]).tolist()
    logprobs: list[list[float]] = []
    start = 0
    for ids in token_ids:
        logprobs.append(flat_logprobs[start : start + len(ids)])
        start += len(ids)
    return VerifiedTokens(token_ids, logprobs, list(num_accepted))
