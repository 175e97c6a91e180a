"""The logprob of every prompt token (TGI's `decoder_input_details`), for the requests that
want it: runner-side state that outlives a step, since a long prompt is prefilled in chunks.

The logprob of prompt token i is log_softmax(raw logits at position i - 1)[token i]. A chunk
computes its positions' logits in slices; the row at a chunk's last position waits for the
next chunk's first token. Values are written by position, so recomputing after preemption or
re-running a failed step only writes them again. A request's list is handed over once, when
its prompt is done; the first token has no logprob and unknown ones are NaN."""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from sluice.model.step import RequestId, ScheduledRequest

ROWS_PER_SLICE = 256
"""Prompt positions whose logits are computed at once: bounds memory to a slice x vocab."""

LogitsFunction = Callable[[torch.Tensor], torch.Tensor]
"""hidden [num_rows, hidden] -> float32 logits [num_rows, vocab_size]."""


@dataclass(slots=True)
class _PromptState:
    logprobs: list[float]
    """[num_prompt_tokens - 1]: entry p is the logprob of prompt token p + 1; NaN until known."""
    boundary_rows: dict[int, torch.Tensor] = field(default_factory=dict)
    """Position -> [vocab_size] logprobs of a chunk's last position, whose token comes next."""


class PromptLogprobs:
    def __init__(self) -> None:
        self._requests: dict[RequestId, _PromptState] = {}

    def compute(
        self, requests: Sequence[ScheduledRequest], hidden: torch.Tensor, logits: LogitsFunction
    ) -> None:
        """Fill in the positions this step computes. hidden: [num_tokens, hidden], the plan's."""
        offset = 0
        for request in requests:
            if request.wants_prompt_logprobs:
                rows = hidden[offset : offset + len(request.token_ids)]
                self._compute_request(request, rows, logits)
            offset += len(request.token_ids)

    def take(self, request_id: RequestId) -> tuple[float, ...]:
        """The request's prompt logprobs, once: its state is dropped."""
        state = self._requests.pop(request_id, None)
        return tuple(state.logprobs) if state is not None else ()

    def drop(self, request_ids: Sequence[RequestId]) -> None:
        for request_id in request_ids:
            self._requests.pop(request_id, None)

    def _compute_request(
        self, request: ScheduledRequest, hidden: torch.Tensor, logits: LogitsFunction
    ) -> None:
        num_prompt = request.num_prompt_tokens
        state = self._requests.get(request.request_id)
        if state is None:
            state = self._requests[request.request_id] = _PromptState([math.nan] * (num_prompt - 1))
        start, token_ids = request.num_computed_tokens, request.token_ids
        end = start + len(token_ids)
        boundary = state.boundary_rows.get(start - 1)
        if boundary is not None:  # the previous chunk's last position predicts our first token
            state.logprobs[start - 1] = float(boundary[token_ids[0]])
        for position in [p for p in state.boundary_rows if p < start - 1]:
            del state.boundary_rows[position]  # a rerun of this chunk still finds start - 1
        last = min(end, num_prompt - 1)  # positions start..last-1 predict a prompt token
        for first in range(start, last, ROWS_PER_SLICE):
            stop = min(first + ROWS_PER_SLICE, last)
            log_probs = logits(hidden[first - start : stop - start]).log_softmax(dim=-1)
            known = min(stop, end - 1)  # rows first..known-1 have their next token in this step
            if known > first:
                targets = torch.tensor(token_ids[first - start + 1 : known - start + 1])
                values = log_probs[: known - first].gather(
                    -1, targets.to(log_probs.device)[:, None]
                )
                state.logprobs[first:known] = values.squeeze(-1).tolist()
            if stop == end:  # the chunk ends inside the prompt: keep its last row
                state.boundary_rows[end - 1] = log_probs[-1].clone()
