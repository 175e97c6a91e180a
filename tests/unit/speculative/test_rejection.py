"""Draft verification: greedy drafts kept exactly while they match the argmax, the recovered
and bonus tokens, sampled output distributed as the target (point-mass and full draft
distributions, first and second position), seeds, logprobs, and mixed batches."""

import math

import pytest
import torch

from sluice.model.sampling.sampler import Sampler
from sluice.sampling_params import SamplingParams
from sluice.speculative.rejection import verify_drafts

GREEDY = SamplingParams(max_new_tokens=8)
SAMPLED = SamplingParams(max_new_tokens=8, do_sample=True, seed=0)
TRIALS = 20_000


def _one_hot_logits(token_ids: list[int], vocab_size: int = 10) -> torch.Tensor:
    """[len(token_ids), vocab_size]: each row's argmax is the given token, by a clear margin."""
    logits = torch.randn(len(token_ids), vocab_size, generator=torch.Generator().manual_seed(1))
    logits[torch.arange(len(token_ids)), token_ids] = 10.0
    return logits


def test_verify_greedy_accepts_all_matching_drafts_and_adds_the_bonus() -> None:
    logits = _one_hot_logits([4, 7, 2, 9])
    out = verify_drafts(logits, [[4, 7, 2]], [GREEDY], [None])
    assert out.token_ids == [[4, 7, 2, 9]]
    assert out.num_accepted == [3]


def test_verify_greedy_replaces_the_first_mismatch_with_the_argmax() -> None:
    logits = _one_hot_logits([4, 7, 2, 9])
    out = verify_drafts(logits, [[4, 5, 2]], [GREEDY], [None])
    assert out.token_ids == [[4, 7]]  # draft 2 matches row 2, but follows a rejection
    assert out.num_accepted == [1]
    out = verify_drafts(logits, [[3, 7, 2]], [GREEDY], [None])
    assert out.token_ids == [[4]]
    assert out.num_accepted == [0]


def test_verify_greedy_without_drafts_is_plain_greedy() -> None:
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(2))
    out = verify_drafts(logits, [[], [], []], [GREEDY] * 3, [None] * 3)
    expected = Sampler()(logits, [GREEDY] * 3, [None] * 3)
    assert out.token_ids == [[t] for t in expected.token_ids.tolist()]
    assert out.num_accepted == [0, 0, 0]
    logprobs = torch.tensor([lp for lps in out.logprobs for lp in lps])
    torch.testing.assert_close(logprobs, expected.logprobs)


def test_verify_sampled_without_drafts_is_the_sampler() -> None:
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(3)) * 2
    params = [SamplingParams(max_new_tokens=1, do_sample=True, seed=s) for s in range(4)]
    ours = verify_drafts(
        logits, [[]] * 4, params, [torch.Generator().manual_seed(s) for s in range(4)]
    )
    theirs = Sampler()(logits, params, [torch.Generator().manual_seed(s) for s in range(4)])
    assert ours.token_ids == [[t] for t in theirs.token_ids.tolist()]


def test_verify_mixed_batch_keeps_each_request_to_its_own_rows() -> None:
    # Request 0: greedy, 2 drafts (all accepted). Request 1: greedy, none. Request 2: greedy,
    # 3 drafts (the second rejected). Request 3: sampled on point masses, 1 draft (accepted).
    logits = _one_hot_logits([1, 2, 3] + [5] + [6, 7, 8, 9] + [0, 4])
    logits[-2:] = torch.eye(10)[[0, 4]].log()  # the sampled request's rows: certain 0, then 4
    out = verify_drafts(
        logits,
        [[1, 2], [], [6, 0, 8], [0]],
        [GREEDY, GREEDY, GREEDY, SAMPLED],
        [None, None, None, torch.Generator().manual_seed(0)],
    )
    assert out.token_ids == [[1, 2, 3], [5], [6, 7], [0, 4]]
    assert out.num_accepted == [2, 0, 1, 1]


def test_verify_logprobs_are_the_target_log_softmax_at_each_emitted_token() -> None:
    logits = _one_hot_logits([4, 7, 2])
    out = verify_drafts(logits, [[4, 7]], [GREEDY], [None])
    expected = logits.log_softmax(-1)[torch.arange(3), torch.tensor([4, 7, 2])]
    torch.testing.assert_close(torch.tensor(out.logprobs[0]), expected)


def test_verify_sampled_never_accepts_a_draft_the_target_rules_out() -> None:
    logits = torch.tensor([[0.0, 0.0, -math.inf], [0.0, 0.0, 0.0]])
    for seed in range(50):
        out = verify_drafts(logits, [[2]], [SAMPLED], [torch.Generator().manual_seed(seed)])
        assert out.num_accepted == [0]
        assert out.token_ids[0][0] in (0, 1)


def test_verify_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="rows"):
        verify_drafts(torch.zeros(2, 5), [[1, 2]], [GREEDY], [None])
    with pytest.raises(ValueError, match="one drafts"):
        verify_drafts(torch.zeros(1, 5), [[]], [GREEDY, GREEDY], [None])


def test_verify_same_seed_gives_the_same_tokens() -> None:
    logits = torch.randn(4 * 3, 20, generator=torch.Generator().manual_seed(4))
    drafts = [[1, 2], [3, 4], [5, 6], [7, 8]]
    params = [SAMPLED] * 4

    def run(seeds: list[int]) -> list[list[int]]:
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        return verify_drafts(logits, drafts, params, generators).token_ids

    assert run([1, 2, 3, 4]) == run([1, 2, 3, 4])
    outcomes = {str(run([seed] * 4)) for seed in range(20)}
    assert len(outcomes) > 1  # the seed does matter


# Sampled distributions. Each trial is one request of a large batch sharing one generator;
# the empirical frequency of each token must sit within 5 standard errors of the target p.

TARGET_P = torch.tensor([0.4, 0.25, 0.2, 0.15, 0.0])
SECOND_P = torch.tensor([0.1, 0.1, 0.5, 0.0, 0.3])
DRAFT_Q = torch.tensor([0.1, 0.1, 0.3, 0.3, 0.2])  # far from p, and proposes p's zero token


def _assert_distributed_as(tokens: torch.Tensor, p: torch.Tensor) -> None:
    frequencies = torch.bincount(tokens, minlength=len(p)).double() / len(tokens)
    tolerance = 5 * (p * (1 - p) / len(tokens)).sqrt() + 1e-9
    deviation = (frequencies - p.double()).abs()
    assert bool((deviation <= tolerance).all()), (frequencies, p)


def _trials(
    target_rows: list[torch.Tensor],
    drafts: torch.Tensor,
    draft_probs: torch.Tensor | None,
    seed: int,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Run TRIALS requests, each with its row of `drafts` against the same target rows.
    Returns the tokens emitted at each position (-1 where a request emitted fewer) and the
    accepted counts."""
    logits = torch.stack([p.log() for p in target_rows]).repeat(TRIALS, 1)
    generator = torch.Generator().manual_seed(seed)
    out = verify_drafts(
        logits, drafts.tolist(), [SAMPLED] * TRIALS, [generator] * TRIALS, draft_probs
    )
    assert all(len(ids) == n + 1 for ids, n in zip(out.token_ids, out.num_accepted, strict=True))
    positions = [
        torch.tensor([ids[j] if j < len(ids) else -1 for ids in out.token_ids])
        for j in range(len(target_rows))
    ]
    return positions, torch.tensor(out.num_accepted)


def _assert_rate(rate: torch.Tensor, expected: float) -> None:
    tolerance = 5 * (expected * (1 - expected) / TRIALS) ** 0.5 + 1e-9
    assert abs(rate.double().mean().item() - expected) <= tolerance


def test_tolerance_can_tell_the_draft_distribution_from_the_target() -> None:
    # Emitting drafts unchecked would give q (or the point mass): the tests below would fail.
    assert (DRAFT_Q - TARGET_P).abs().max() > 5 * (0.25 / TRIALS) ** 0.5


@pytest.mark.parametrize("draft_token", [0, 3, 4])
def test_verify_point_mass_drafts_emit_the_target_distribution(draft_token: int) -> None:
    drafts = torch.tensor([[draft_token, 2]]).expand(TRIALS, -1)
    (first, second, _), accepted = _trials([TARGET_P, SECOND_P, TARGET_P], drafts, None, seed=5)
    _assert_distributed_as(first, TARGET_P)
    _assert_rate(accepted >= 1, TARGET_P[draft_token].item())  # a draft x stays with p(x)
    if draft_token != 4:  # given the first draft was kept, the second token follows row 1
        _assert_distributed_as(second[accepted >= 1], SECOND_P)


def test_verify_draft_distribution_emits_the_target_distribution() -> None:
    generator = torch.Generator().manual_seed(6)
    drafts = torch.multinomial(DRAFT_Q.expand(TRIALS, -1), 2, True, generator=generator)
    draft_probs = DRAFT_Q.repeat(TRIALS * 2, 1)
    (first, second, _), accepted = _trials([TARGET_P, SECOND_P, TARGET_P], drafts, draft_probs, 7)
    _assert_distributed_as(first, TARGET_P)
    _assert_distributed_as(second[accepted >= 1], SECOND_P)
    _assert_rate(accepted >= 1, torch.minimum(TARGET_P, DRAFT_Q).sum().item())


def test_verify_bonus_token_after_all_drafts_comes_from_the_last_row() -> None:
    sure = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0])  # forces acceptance of draft 1
    drafts = torch.tensor([[1, 1]]).expand(TRIALS, -1)
    (_, _, third), accepted = _trials([sure, sure, TARGET_P], drafts, None, seed=8)
    assert bool((accepted == 2).all())
    _assert_distributed_as(third, TARGET_P)
