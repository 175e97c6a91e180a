"""TokenCounts: counts per request across steps, slots that grow and are reused zeroed."""

import torch

from sluice.model.sampling.token_counts import MIN_SLOTS, TokenCounts
from sluice.model.step import ScheduledRequest

VOCAB = 16


def _step(request_id: str, token_ids: list[int], start: int) -> ScheduledRequest:
    return ScheduledRequest(request_id, tuple(token_ids), start, 4, (), None, counts_tokens=True)


def test_token_counts_many_requests_grow_the_table_and_keep_their_rows() -> None:
    counts = TokenCounts(VOCAB, torch.device("cpu"))
    num_requests = 2 * MIN_SLOTS + 1

    counts.observe([_step(f"r{i}", [i % VOCAB, 0, 0], 0) for i in range(num_requests)])
    counts.observe([_step(f"r{i}", [1], 3) for i in range(num_requests)])

    ids = [f"r{i}" for i in range(num_requests)]
    history = counts.history(range(num_requests), ids)
    expected = torch.zeros(num_requests, VOCAB, dtype=torch.int32)
    for i in range(num_requests):
        for token in (i % VOCAB, 0, 0, 1):
            expected[i, token] += 1
    assert torch.equal(history.counts, expected)
    assert history.sequence_lengths.tolist() == [4.0] * num_requests


def test_token_counts_dropped_slot_is_reused_from_zero() -> None:
    counts = TokenCounts(VOCAB, torch.device("cpu"))
    counts.observe([_step("a", [3, 3, 3], 0)])

    counts.drop(["a", "never-seen"])
    counts.observe([_step("b", [4], 0)])

    assert "a" not in counts
    history = counts.history([0], ["b"])
    assert history.counts[0].tolist() == [0, 0, 0, 0, 1] + [0] * (VOCAB - 5)
    assert history.sequence_lengths.tolist() == [1.0]
