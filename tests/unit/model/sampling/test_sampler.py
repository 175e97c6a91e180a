"""Sampler on small random logits: greedy rows, top-k, top-p, seeds, the sampled distribution,
and logprobs under the processed distribution."""

import pytest
import torch

from sluice.model.sampling.sampler import Sampler
from sluice.sampling_params import SamplingParams

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
