"""Constrained decoding, engine side: one llguidance matcher per request with a grammar, built
when the request arrives, advanced with every token the request accepts, dropped with it.

Each step the matchers write the allowed next tokens of the constrained sampling rows into a
bitmask (bit t % 32 of word t // 32 set = token t allowed) on a worker thread, while the forward
pass runs: llguidance releases the GIL while it computes masks. Only sampled tokens advance a
matcher, so recomputing a preempted request's tokens leaves it as it was. A matcher that has
matched its whole grammar allows only the request's stop tokens, so the request ends with EOS."""

import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import llguidance
import llguidance.hf
import numpy as np
import torch
from transformers import AutoTokenizer

from sluice.grammars import llguidance_grammar
from sluice.model.sampling.sampler import TokenMasks
from sluice.model.step import RequestId, SampledToken, StepPlan
from sluice.sampling_params import SamplingParams

logger = logging.getLogger(__name__)

MASK_THREADS = 4
"""llguidance threads that compute one step's masks in parallel (fewer when fewer cores)."""


@dataclass(slots=True)
class _Constrained:
    matcher: llguidance.LLMatcher
    stop_token_ids: tuple[int, ...]
    """Allowed once the grammar can end; they end the request and never advance the matcher."""


class GrammarMatchers:
    def __init__(self, tokenizer: llguidance.LLTokenizer, vocab_size: int) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._words = (vocab_size + 31) // 32
        self._eos = tokenizer.eos_token
        self._constrained: dict[RequestId, _Constrained] = {}
        self._executor: llguidance.LLExecutor | None = None
        self._worker: ThreadPoolExecutor | None = None

    def start(self) -> None:
        """Start the mask worker thread and llguidance's thread pool."""
        threads = max(1, min(MASK_THREADS, (os.cpu_count() or 1) // 2))
        self._executor = llguidance.LLExecutor(num_threads=threads)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grammar-masks")

    def __contains__(self, request_id: RequestId) -> bool:
        return request_id in self._constrained

    def add(self, request_id: RequestId, sampling: SamplingParams) -> str | None:
        """Build the request's matcher; returns why it cannot be built, if it cannot."""
        assert sampling.grammar is not None
        try:
            grammar = llguidance_grammar(sampling.grammar)
        except ValueError as error:
            return str(error)
        matcher = llguidance.LLMatcher(self._tokenizer, grammar, log_level=0)
        if matcher.is_error():
            return matcher.get_error()
        self._constrained[request_id] = _Constrained(matcher, sampling.stop_token_ids)
        return None

    def drop(self, request_ids: Iterable[RequestId]) -> None:
        if not self._constrained:
            return
        for request_id in request_ids:
            self._constrained.pop(request_id, None)

    def masks_in_background(self, plan: StepPlan) -> Future[TokenMasks] | None:
        """Start computing the plan's masks on the worker thread; None when no sampling row of
        the plan has a grammar. Wait for the result before advancing any matcher."""
        rows = self._rows(plan)
        if not rows:
            return None
        assert self._worker is not None, "start() first"
        return self._worker.submit(self._masks, rows)

    def masks(self, plan: StepPlan) -> TokenMasks | None:
        """The plan's masks, computed on this thread."""
        rows = self._rows(plan)
        return self._masks(rows) if rows else None

    def advance(self, sampled: Sequence[SampledToken]) -> dict[RequestId, str]:
        """Feed each constrained request the token it accepted. Returns an error message per
        request whose matcher refused its token (the mask should make that impossible)."""
        errors: dict[RequestId, str] = {}
        if not self._constrained:
            return errors
        for token in sampled:
            constrained = self._constrained.get(token.request_id)
            if constrained is None or token.token_id in constrained.stop_token_ids:
                continue
            if not constrained.matcher.consume_token(token.token_id):
                errors[token.request_id] = f"grammar: {constrained.matcher.get_error()}"
                del self._constrained[token.request_id]
        return errors

    def _rows(self, plan: StepPlan) -> list[tuple[int, _Constrained]]:
        """(sampling row, matcher) of the plan's constrained requests that sample."""
        if not self._constrained:  # the common step: nothing to look at
            return []
        sampling = [r for r in plan.requests if r.sampling is not None]
        return [
            (row, self._constrained[r.request_id])
            for row, r in enumerate(sampling)
            if r.request_id in self._constrained
        ]

    def _masks(self, rows: Sequence[tuple[int, _Constrained]]) -> TokenMasks:
        bitmask = torch.empty(len(rows), self._words, dtype=torch.int32)  # [num_rows, words]
        matchers = [(constrained.matcher, index) for index, (_, constrained) in enumerate(rows)]
        if self._executor is not None:
            self._executor.unsafe_compute_mask_ptr(
                matchers, bitmask.data_ptr(), self._words * 4, len(rows)
            )
        else:
            for matcher, index in matchers:
                matcher.unsafe_compute_mask_ptr(bitmask[index].data_ptr(), self._words * 4)
        words = bitmask.numpy().view(np.uint32)
        for index, (_, constrained) in enumerate(rows):
            self._allow_stop_tokens(words[index], constrained.stop_token_ids)
        return TokenMasks(rows=tuple(row for row, _ in rows), bitmask=bitmask)

    def _allow_stop_tokens(self, words: np.ndarray, stop_token_ids: Sequence[int]) -> None:
        """llguidance allows its tokenizer's EOS where the grammar may end; allow the request's
        own stop tokens there instead (generation_config may list several), if it has any."""
        if not stop_token_ids:
            return
        eos_word, eos_bit = divmod(self._eos, 32)
        may_end = bool(words[eos_word] >> eos_bit & 1)
        words[eos_word] &= ~np.uint32(1 << eos_bit)
        if may_end:
            for token_id in stop_token_ids:
                word, bit = divmod(token_id, 32)
                words[word] |= np.uint32(1 << bit)


def load_grammar_matchers(
    model_path: Path, vocab_size: int, *, trust_remote_code: bool
) -> GrammarMatchers | None:
    """Matchers over the model's tokenizer; None (grammars then fail) when llguidance cannot
    read it: it needs a fast tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    try:
        ll_tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size)
    except ValueError as error:
        logger.warning("grammars are not available with this tokenizer: %s", error)
        return None
    return GrammarMatchers(ll_tokenizer, vocab_size)
