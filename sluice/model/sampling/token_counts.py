"""How often each token occurs in the sequence (prompt + output) of every request that uses a
penalty: runner-side state that outlives a step.

Counts grow as the steps bring each request's tokens (prompt chunks, then each fed-back
sample); positions already counted are skipped, so recomputing after preemption or re-running
a failed step changes nothing. Requests without a penalty have no row and cost nothing."""

from collections.abc import Sequence

import torch

from sluice.model.sampling.sampler import TokenHistory
from sluice.model.step import RequestId, ScheduledRequest

MIN_SLOTS = 8


class TokenCounts:
    def __init__(self, vocab_size: int, device: torch.device) -> None:
        self._vocab_size = vocab_size
        self._device = device
        self._counts = torch.zeros(0, vocab_size, dtype=torch.int32, device=device)
        """[num_slots, vocab_size] int32: one row per tracked request."""
        self._slots: dict[RequestId, int] = {}
        self._free_slots: list[int] = []
        self._num_counted: dict[RequestId, int] = {}
        """Positions counted so far: the request's sequence length once its step has run."""

    def __contains__(self, request_id: RequestId) -> bool:
        return request_id in self._slots

    def observe(self, requests: Sequence[ScheduledRequest]) -> None:
        """Count the tokens of this step that no earlier step brought."""
        slots: list[int] = []
        token_ids: list[int] = []
        for request in requests:
            if not request.counts_tokens:
                continue
            counted = self._num_counted.get(request.request_id, 0)
            start = request.num_computed_tokens
            if start > counted:
                raise RuntimeError(
                    f"request {request.request_id} skipped positions {counted}..{start - 1}: "
                    "a penalty needs every token of the sequence"
                )
            new = request.token_ids[counted - start :]
            slots += [self._slot_for(request.request_id)] * len(new)
            token_ids += new
            self._num_counted[request.request_id] = max(counted, start + len(request.token_ids))
        if token_ids:
            index = (
                torch.tensor(slots, device=self._device),
                torch.tensor(token_ids, device=self._device),
            )
            ones = torch.ones(len(token_ids), dtype=torch.int32, device=self._device)
            self._counts.index_put_(index, ones, accumulate=True)

    def history(self, rows: Sequence[int], request_ids: Sequence[RequestId]) -> TokenHistory:
        """The counts of `request_ids`, which sit at `rows` of the sampling batch."""
        slots = torch.tensor([self._slots[r] for r in request_ids], device=self._device)
        lengths = [float(self._num_counted[r]) for r in request_ids]
        return TokenHistory(
            rows=tuple(rows),
            counts=self._counts[slots],
            sequence_lengths=torch.tensor(lengths, device=self._device),
        )

    def drop(self, request_ids: Sequence[RequestId]) -> None:
        for request_id in request_ids:
            slot = self._slots.pop(request_id, None)
            if slot is not None:
                self._free_slots.append(slot)
                del self._num_counted[request_id]

    def _slot_for(self, request_id: RequestId) -> int:
        slot = self._slots.get(request_id)
        if slot is not None:
            return slot
        if not self._free_slots:
            self._grow()
        slot = self._free_slots.pop()
        self._counts[slot].zero_()
        self._slots[request_id] = slot
        return slot

    def _grow(self) -> None:
        num_slots = self._counts.shape[0]
        added = max(MIN_SLOTS, num_slots)
        zeros = self._counts.new_zeros(added, self._vocab_size)
        self._counts = torch.cat([self._counts, zeros])
        self._free_slots.extend(reversed(range(num_slots, num_slots + added)))
