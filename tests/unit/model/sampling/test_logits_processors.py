"""Watermark, penalties and typical-p against transformers' own processors (or TGI's formula
by hand) on the same logits, one row at a time and batched."""

import pytest
import torch
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TypicalLogitsWarper,
    WatermarkLogitsProcessor,
)

from sluice.model.sampling.logits_processors import (
    apply_penalties,
    apply_typical_p,
    apply_watermark,
)
from sluice.sampling_params import Watermark

VOCAB = 64


def _logits(rows: int, seed: int = 0, vocab: int = VOCAB) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * 3


def _sequence(length: int, seed: int) -> torch.Tensor:
    """Token ids with repeats: drawn from a quarter of the vocabulary."""
    return torch.randint(0, VOCAB // 4, (length,), generator=torch.Generator().manual_seed(seed))


def _penalise(
    logits: torch.Tensor, sequences: list[torch.Tensor], repetition: float, frequency: float
) -> torch.Tensor:
    out = logits.clone()
    apply_penalties(
        out,
        torch.arange(len(sequences)),
        torch.stack([torch.bincount(s, minlength=VOCAB).int() for s in sequences]),
        torch.tensor([float(len(s)) for s in sequences]),
        torch.full((len(sequences),), repetition),
        torch.full((len(sequences),), frequency),
    )
    return out


@pytest.mark.parametrize("penalty", [0.5, 1.0, 1.3, 2.0])
def test_repetition_penalty_matches_transformers(penalty: float) -> None:
    logits = _logits(3, seed=1)
    sequences = [_sequence(n, seed) for seed, n in enumerate((5, 12, 30))]

    ours = _penalise(logits, sequences, penalty, 0.0)

    for row, sequence in enumerate(sequences):
        reference = RepetitionPenaltyLogitsProcessor(penalty)(sequence[None], logits[row : row + 1])
        torch.testing.assert_close(ours[row], reference[0])
    if penalty != 1.0:
        assert not torch.equal(ours, logits)


@pytest.mark.parametrize("penalty", [-2.0, -0.5, 0.7, 2.0])
def test_frequency_penalty_subtracts_length_normalised_counts(penalty: float) -> None:
    logits = _logits(2, seed=2)
    sequences = [_sequence(8, 3), _sequence(20, 4)]

    ours = _penalise(logits, sequences, 1.0, penalty)

    for row, sequence in enumerate(sequences):
        expected = logits[row].clone()
        for token in set(sequence.tolist()):  # by hand: count / length, times the penalty
            count = int((sequence == token).sum())
            expected[token] -= count / len(sequence) * penalty
        torch.testing.assert_close(ours[row], expected)


def test_penalties_compose_repetition_first_and_leave_other_rows_alone() -> None:
    logits = _logits(4, seed=5)
    sequence = _sequence(10, 6)
    counts = torch.bincount(sequence, minlength=VOCAB).int()[None]
    out = logits.clone()

    apply_penalties(
        out,
        torch.tensor([2]),
        counts,
        torch.tensor([10.0]),
        torch.tensor([1.5]),
        torch.tensor([1.0]),
    )

    repeated = RepetitionPenaltyLogitsProcessor(1.5)(sequence[None], logits[2:3])[0]
    expected = repeated - counts[0].float() / 10 * 1.0
    torch.testing.assert_close(out[2], expected)
    assert torch.equal(out[[0, 1, 3]], logits[[0, 1, 3]])


@pytest.mark.parametrize("mass", [0.05, 0.2, 0.5, 0.9, 0.99])
def test_typical_p_matches_transformers(mass: float) -> None:
    logits = _logits(4, seed=7)
    logits[3, 10:] = float("-inf")  # a row already cut by top-k keeps working

    ours = apply_typical_p(logits, torch.full((4,), mass))

    reference = TypicalLogitsWarper(mass)(None, logits)
    assert torch.equal(ours.isinf(), reference.isinf())
    torch.testing.assert_close(ours, reference)
    assert (ours.isfinite().sum(-1) >= 1).all()


def test_typical_p_of_one_leaves_its_row_unchanged() -> None:
    logits = _logits(3, seed=8)

    ours = apply_typical_p(logits, torch.tensor([1.0, 0.3, 1.0]))

    assert torch.equal(ours[[0, 2]], logits[[0, 2]])
    torch.testing.assert_close(ours[1], TypicalLogitsWarper(0.3)(None, logits[1:2])[0])


@pytest.mark.parametrize(("gamma", "delta"), [(0.5, 2.0), (0.25, 4.0)])
def test_watermark_matches_transformers_lefthash(gamma: float, delta: float) -> None:
    logits = _logits(5, seed=9)
    previous = [3, 17, 3, 0, 63]
    marked = [0, 1, 3, 4]  # row 2 carries no watermark
    out = logits.clone()

    apply_watermark(out, marked, [previous[r] for r in marked], [Watermark(gamma, delta)] * 4)

    reference = WatermarkLogitsProcessor(VOCAB, "cpu", greenlist_ratio=gamma, bias=delta)
    for row in marked:
        expected = reference(torch.tensor([[5, previous[row]]]), logits[row : row + 1])[0]
        torch.testing.assert_close(out[row], expected)
        assert int(((out[row] - logits[row]) > 0).sum()) == int(VOCAB * gamma)
    assert torch.equal(out[2], logits[2])


def test_watermark_green_list_depends_on_the_previous_token_only() -> None:
    logits = torch.zeros(3, VOCAB)

    apply_watermark(logits, [0, 1, 2], [5, 5, 6], [Watermark()] * 3)

    assert torch.equal(logits[0], logits[1])
    assert not torch.equal(logits[0], logits[2])
