"""Sampler on small random logits: greedy rows, top-k, top-p, typical-p, penalties, watermark,
seeds, the sampled distribution, logprobs and top tokens under the processed distribution, and
mixed batches whose rows match their solo results."""

import pytest
import torch
from transformers.generation.logits_process import TypicalLogitsWarper

from sluice.model.sampling.sampler import Sampler, TokenHistory
from sluice.sampling_params import SamplingParams, Watermark

VOCAB = 50
GREEDY = SamplingParams(max_new_tokens=1)


def _sampled(seed: int = 0, **params: object) -> SamplingParams:
    return SamplingParams(max_new_tokens=1, do_sample=True, seed=seed, **params)  # type: ignore[arg-type]


def _generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed) for seed in seeds]


def _logits(rows: int, seed: int = 0, vocab: int = VOCAB) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * 2


def _draw(logits_row: torch.Tensor, n: int, first_seed: int = 0, **params: object):
    """n independent draws from one distribution: n rows, each with its own seeded generator."""
    seeds = list(range(first_seed, first_seed + n))
    out = Sampler()(
        logits_row.expand(n, -1).contiguous(),
        [_sampled(seed, **params) for seed in seeds],
        _generators(seeds),
    )
    return out.token_ids, out.logprobs


def test_sampler_greedy_batch_takes_argmax_with_its_logprob() -> None:
    logits = _logits(4)

    out = Sampler()(logits, [GREEDY] * 4, [None] * 4)

    assert torch.equal(out.token_ids, logits.argmax(-1))
    expected = logits.log_softmax(-1).max(-1).values
    torch.testing.assert_close(out.logprobs, expected)


def test_sampler_greedy_rows_take_argmax_beside_sampled_rows() -> None:
    logits = _logits(6, seed=1)
    params = [GREEDY, _sampled(1, temperature=3.0), GREEDY, _sampled(2, top_k=3)] + [
        _sampled(3, top_p=0.5),
        GREEDY,
    ]
    generators = [None, *_generators([1]), None, *_generators([2, 3]), None]

    out = Sampler()(logits, params, generators)

    greedy_rows = [0, 2, 5]
    assert torch.equal(out.token_ids[greedy_rows], logits[greedy_rows].argmax(-1))
    # A greedy row's logprob is under its own unfiltered distribution.
    expected = logits[greedy_rows].log_softmax(-1).max(-1).values
    torch.testing.assert_close(out.logprobs[greedy_rows], expected)


def test_sampler_top_k_1_is_argmax_for_every_seed() -> None:
    logits = _logits(1, seed=2)[0]

    tokens, logprobs = _draw(logits, 200, top_k=1, temperature=2.0)

    assert torch.all(tokens == logits.argmax())
    torch.testing.assert_close(logprobs, torch.zeros(200))


@pytest.mark.parametrize("k", [2, 5, 10])
def test_sampler_top_k_never_picks_outside_the_k_most_likely(k: int) -> None:
    logits = _logits(1, seed=3)[0]
    allowed = set(logits.topk(k).indices.tolist())

    tokens, _ = _draw(logits, 1000, top_k=k)

    assert set(tokens.tolist()) == allowed  # all of them, and nothing else


@pytest.mark.parametrize(
    ("top_p", "nucleus_size"),
    [(0.3, 1), (0.45, 1), (0.7, 2), (0.85, 3), (0.97, 4)],
)
def test_sampler_top_p_keeps_the_smallest_prefix_reaching_p(
    top_p: float, nucleus_size: int
) -> None:
    # Probabilities 0.5, 0.3, 0.15, 0.04 on shuffled ids; the rest share 0.01.
    head = torch.tensor([0.5, 0.3, 0.15, 0.04])
    probs = torch.full((VOCAB,), 0.01 / (VOCAB - 4))
    order = torch.randperm(VOCAB, generator=torch.Generator().manual_seed(4))
    probs[order[:4]] = head
    nucleus = order[:nucleus_size]

    tokens, logprobs = _draw(probs.log(), 1000, top_p=top_p)

    assert set(tokens.tolist()) == set(nucleus.tolist())
    kept = probs[nucleus] / probs[nucleus].sum()
    expected = kept.log()[(tokens[:, None] == nucleus[None, :]).int().argmax(-1)]
    torch.testing.assert_close(logprobs, expected)


def test_sampler_same_seed_same_tokens_different_seeds_differ() -> None:
    logits = torch.zeros(1, VOCAB)  # uniform: every draw is a fresh coin

    def sequence(seed: int) -> list[int]:
        generator = torch.Generator().manual_seed(seed)
        return [
            int(Sampler()(logits, [_sampled(seed)], [generator]).token_ids[0]) for _ in range(20)
        ]

    assert sequence(7) == sequence(7)
    runs = {tuple(sequence(seed)) for seed in range(10)}
    assert len(runs) == 10


def test_sampler_generator_advances_between_steps() -> None:
    generator = torch.Generator().manual_seed(11)
    logits = torch.zeros(1, VOCAB)

    tokens = [int(Sampler()(logits, [_sampled()], [generator]).token_ids[0]) for _ in range(20)]

    assert len(set(tokens)) > 5


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_sampler_empirical_distribution_matches_softmax(temperature: float) -> None:
    vocab, draws = 10, 4000
    logits = _logits(1, seed=5, vocab=vocab)[0] / 2  # no token dominates
    expected = (logits / temperature).softmax(-1) * draws

    tokens, _ = _draw(logits, draws, temperature=temperature)

    counts = torch.bincount(tokens, minlength=vocab).double()
    observed = expected > 5  # chi-square needs populated cells; fold the rest together
    chi2 = ((counts[observed] - expected[observed]) ** 2 / expected[observed]).sum()
    rest_expected = expected[~observed].sum()
    if rest_expected > 0:
        chi2 += (counts[~observed].sum() - rest_expected) ** 2 / rest_expected
    # 9 degrees of freedom at most: P(chi2 > 30) < 0.001 when the sampler is right.
    assert chi2 < 30, f"chi2={chi2:.1f}, counts={counts.tolist()}"


def test_sampler_logprobs_are_log_softmax_of_the_filtered_logits() -> None:
    logits = _logits(3, seed=6)
    params = [_sampled(1, temperature=2.0, top_k=4), _sampled(2, temperature=0.5), GREEDY]

    out = Sampler()(logits, params, [*_generators([1, 2]), None])

    scaled = logits[0] / 2.0
    top4 = scaled.topk(4).indices
    filtered = torch.full_like(scaled, float("-inf"))
    filtered[top4] = scaled[top4]
    expected = torch.stack(
        [
            filtered.log_softmax(-1)[out.token_ids[0]],
            (logits[1] / 0.5).log_softmax(-1)[out.token_ids[1]],
            logits[2].log_softmax(-1)[out.token_ids[2]],
        ]
    )
    assert out.token_ids[0] in top4
    torch.testing.assert_close(out.logprobs, expected)


def _history(rows: list[int], sequences: list[list[int]], vocab: int = VOCAB) -> TokenHistory:
    return TokenHistory(
        rows=tuple(rows),
        counts=torch.stack(
            [torch.bincount(torch.tensor(s), minlength=vocab).int() for s in sequences]
        ),
        sequence_lengths=torch.tensor([float(len(s)) for s in sequences]),
    )


def test_sampler_greedy_row_with_repetition_penalty_takes_the_penalised_argmax() -> None:
    logits = torch.zeros(1, VOCAB)
    logits[0, 7], logits[0, 9] = 3.0, 2.0  # 7 wins unless penalised: 3 / 2 < 2
    params = [SamplingParams(max_new_tokens=1, repetition_penalty=2.0)]

    out = Sampler()(logits, params, [None], history=_history([0], [[7, 7, 1]]))

    assert out.token_ids.tolist() == [9]
    penalised = logits.clone()
    penalised[0, 7] = 1.5
    torch.testing.assert_close(out.logprobs, penalised.log_softmax(-1)[:, 9])
    assert logits[0, 7] == 3.0  # the caller's logits are left alone


def test_sampler_typical_p_never_picks_outside_the_typical_set() -> None:
    logits = _logits(1, seed=12)[0]
    allowed = TypicalLogitsWarper(0.4)(None, logits[None])[0].isfinite()

    tokens, logprobs = _draw(logits, 500, typical_p=0.4)

    assert allowed[tokens].all()
    assert set(tokens.tolist()) == set(allowed.nonzero().flatten().tolist())
    kept = logits.masked_fill(~allowed, float("-inf")).log_softmax(-1)
    torch.testing.assert_close(logprobs, kept[tokens])


MIXED = [
    GREEDY,
    SamplingParams(max_new_tokens=1, repetition_penalty=1.8, top_n_tokens=3),
    _sampled(21, typical_p=0.5, temperature=0.8),
    _sampled(22, top_k=5, frequency_penalty=1.5, repetition_penalty=1.2),
    SamplingParams(max_new_tokens=1, watermark=Watermark(0.5, 4.0), top_n_tokens=2),
    _sampled(23, top_p=0.6, typical_p=0.9, watermark=Watermark(0.25, 2.0), top_n_tokens=5),
    _sampled(24, frequency_penalty=-2.0),
]
SEQUENCES = {1: [3, 3, 4], 3: [5, 6, 5, 5, 9, 10], 6: [1, 2, 3, 1]}


def _solo(logits_row: torch.Tensor, row: int):
    p = MIXED[row]
    generator = torch.Generator().manual_seed(p.seed) if p.seed is not None else None
    history = _history([0], [SEQUENCES[row]]) if row in SEQUENCES else None
    return Sampler()(logits_row[None], [p], [generator], history=history, previous_token_ids=[row])


def test_sampler_mixed_batch_rows_equal_their_solo_results() -> None:
    logits = _logits(len(MIXED), seed=13)
    generators = [
        torch.Generator().manual_seed(p.seed) if p.seed is not None else None for p in MIXED
    ]
    rows = sorted(SEQUENCES)
    history = _history(rows, [SEQUENCES[row] for row in rows])

    out = Sampler()(
        logits, MIXED, generators, history=history, previous_token_ids=list(range(len(MIXED)))
    )

    assert out.top_tokens is not None
    for row in range(len(MIXED)):
        solo = _solo(logits[row], row)
        assert out.token_ids[row] == solo.token_ids[0], row
        torch.testing.assert_close(out.logprobs[row], solo.logprobs[0])
        expected_top = solo.top_tokens.token_ids[0] if solo.top_tokens else []
        assert out.top_tokens.token_ids[row] == expected_top
        wanted = MIXED[row].top_n_tokens
        assert 0 < len(expected_top) <= wanted if wanted else expected_top == []
    assert out.token_ids[0] == logits[0].argmax()


def test_sampler_same_seed_reproduces_every_feature() -> None:
    logits = _logits(len(MIXED), seed=14)
    rows = sorted(SEQUENCES)

    def run() -> list[int]:
        generators = [
            torch.Generator().manual_seed(p.seed) if p.seed is not None else None for p in MIXED
        ]
        history = _history(rows, [SEQUENCES[row] for row in rows])
        tokens = []
        for _ in range(5):  # the generators advance between steps, identically in both runs
            out = Sampler()(logits, MIXED, generators, history=history, previous_token_ids=[1] * 7)
            tokens += out.token_ids.tolist()
        return tokens

    assert run() == run()


def test_sampler_top_tokens_come_from_the_processed_distribution() -> None:
    logits = _logits(2, seed=15)
    params = [
        _sampled(1, top_k=2, top_n_tokens=4),
        SamplingParams(max_new_tokens=1, top_n_tokens=3),
    ]

    out = Sampler()(logits, params, _generators([1, 2]))

    assert out.top_tokens is not None
    top2 = logits[0].topk(2).indices.tolist()
    assert out.top_tokens.token_ids[0] == top2  # the other tokens are -inf: never listed
    kept = logits[0, top2].log_softmax(-1).tolist()
    assert out.top_tokens.logprobs[0] == pytest.approx(kept)
    top3 = logits[1].log_softmax(-1).topk(3)
    assert out.top_tokens.token_ids[1] == top3.indices.tolist()
    assert out.top_tokens.logprobs[1] == pytest.approx(top3.values.tolist())
