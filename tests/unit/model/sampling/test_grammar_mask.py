"""The grammar mask in the sampler: forbidden tokens are never chosen, logprobs come from the
masked distribution, rows without a grammar are untouched, and the mask sits after the
penalties and before the warpers (contract 6.1)."""

import torch

from sluice.model.sampling.logits_processors import apply_token_bitmask
from sluice.model.sampling.sampler import Sampler, TokenHistory, TokenMasks
from sluice.sampling_params import SamplingParams

VOCAB = 70  # not a multiple of 32: the last word of the bitmask is partly padding
GREEDY = SamplingParams(max_new_tokens=1)


def _bitmask(allowed: list[list[int]], vocab: int = VOCAB) -> torch.Tensor:
    """[len(allowed), ceil(vocab / 32)] int32 with the bits of `allowed` set per row."""
    words = torch.zeros(len(allowed), (vocab + 31) // 32, dtype=torch.int64)
    for row, token_ids in enumerate(allowed):
        for token_id in token_ids:
            words[row, token_id // 32] |= 1 << (token_id % 32)
    return words.to(torch.int32)  # wraps bit 31 into the sign, as llguidance writes it


def _logits(rows: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, VOCAB, generator=torch.Generator().manual_seed(seed)) * 2


def test_apply_token_bitmask_forbids_all_but_the_allowed_tokens_of_its_rows() -> None:
    logits = _logits(3)
    original = logits.clone()

    apply_token_bitmask(logits, [0, 2], _bitmask([[1, 31, 69], [32, 63]]))

    assert torch.isfinite(logits[0]).nonzero().flatten().tolist() == [1, 31, 69]
    assert torch.equal(logits[0, [1, 31, 69]], original[0, [1, 31, 69]])
    assert torch.equal(logits[1], original[1])
    assert torch.isfinite(logits[2]).nonzero().flatten().tolist() == [32, 63]


def test_sampler_greedy_row_takes_the_best_allowed_token_with_masked_logprob() -> None:
    logits = _logits(2, seed=1)
    allowed = [5, 40, 66]
    masks = TokenMasks(rows=(1,), bitmask=_bitmask([allowed]))

    out = Sampler()(logits, [GREEDY, GREEDY], [None, None], allowed=masks)

    assert out.token_ids[0] == logits[0].argmax()  # no grammar: untouched
    best = allowed[int(logits[1, allowed].argmax())]
    assert out.token_ids[1] == best
    torch.testing.assert_close(out.logprobs[1], logits[1, allowed].log_softmax(-1).max())
    assert torch.equal(logits, _logits(2, seed=1))  # the caller's logits are left alone


def test_sampler_sampled_rows_draw_only_allowed_tokens() -> None:
    n = 200
    logits = _logits(1, seed=2).expand(n, -1).contiguous()
    params = [
        SamplingParams(max_new_tokens=1, do_sample=True, seed=seed, top_k=3) for seed in range(n)
    ]
    generators = [torch.Generator().manual_seed(seed) for seed in range(n)]
    allowed = [0, 7, 33, 34, 50]
    masks = TokenMasks(rows=tuple(range(n)), bitmask=_bitmask([allowed] * n))

    out = Sampler()(logits, params, generators, allowed=masks)

    # top-k applies after the mask: the 3 best of the allowed tokens, each drawn at least once
    top3 = {allowed[i] for i in logits[0, allowed].topk(3).indices.tolist()}
    assert set(out.token_ids.tolist()) == top3


def test_sampler_mask_comes_after_the_penalties() -> None:
    """A penalty that pushes the favourite below another allowed token changes the choice; the
    mask then still holds the choice to the allowed tokens."""
    logits = torch.full((1, VOCAB), -5.0)
    logits[0, 3], logits[0, 4], logits[0, 9] = 4.0, 3.0, 10.0  # 9 is best but forbidden
    counts = torch.zeros(1, VOCAB, dtype=torch.int32)
    counts[0, 3] = 1
    history = TokenHistory(rows=(0,), counts=counts, sequence_lengths=torch.tensor([1.0]))
    penalised = SamplingParams(max_new_tokens=1, repetition_penalty=2.0)
    masks = TokenMasks(rows=(0,), bitmask=_bitmask([[3, 4]]))

    out = Sampler()(logits, [penalised], [None], history=history, allowed=masks)

    assert out.token_ids.tolist() == [4]  # 3 penalised to 2.0 < 3.0; 9 forbidden


def test_sampler_without_masks_keeps_the_plain_greedy_path() -> None:
    logits = _logits(2, seed=3)
    out = Sampler()(logits, [GREEDY, GREEDY], [None, None], allowed=None)
    assert torch.equal(out.token_ids, logits.argmax(-1))
