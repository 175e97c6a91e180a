"""N-gram drafts: TGI's first-occurrence rule, the longest-ending preference, truncation, an
incremental index that agrees with a brute-force search, per-request syncing, and speed."""

import random
import time

from hypothesis import given
from hypothesis import strategies as st

from sluice.speculative.ngram import NgramIndex, NgramProposer


def _index(token_ids: list[int], max_ngram: int) -> NgramIndex:
    index = NgramIndex(max_ngram)
    index.extend(token_ids)
    return index


def _brute_force(token_ids: list[int], max_ngram: int, num_tokens: int) -> tuple[int, ...]:
    """The rule written out: longest ending first, its first earlier occurrence."""
    last = len(token_ids) - 1
    for n in range(min(max_ngram, last), 0, -1):
        ending = token_ids[last - n + 1 :]
        for end in range(n - 1, last):
            if token_ids[end - n + 1 : end + 1] == ending:
                return tuple(token_ids[end + 1 : end + 1 + num_tokens])
    return ()


def test_ngram_tgi_rule_copies_after_first_occurrence_of_last_token() -> None:
    # The last token 1 occurs at 0 and 3: TGI copies what followed the first one.
    tokens = [1, 2, 3, 1, 5, 6, 1]
    assert _index(tokens, max_ngram=1).propose(3) == (2, 3, 1)


def test_ngram_prefers_the_longest_earlier_ending() -> None:
    # Ending (5, 8) occurred at 3..4 and was followed by 10; token 8 alone first at 1, then 9.
    tokens = [7, 8, 9, 5, 8, 10, 5, 8]
    assert _index(tokens, max_ngram=1).propose(3) == (9, 5, 8)
    assert _index(tokens, max_ngram=2).propose(3) == (10, 5, 8)
    assert _index(tokens, max_ngram=4).propose(3) == (10, 5, 8)


def test_ngram_falls_back_to_shorter_endings() -> None:
    # (4, 2) never occurred before, so the last token 2 alone decides.
    tokens = [2, 6, 7, 4, 2]
    assert _index(tokens, max_ngram=3).propose(2) == (6, 7)


def test_ngram_without_an_earlier_occurrence_proposes_nothing() -> None:
    assert _index([1, 2, 3, 4], max_ngram=3).propose(4) == ()
    assert _index([5], max_ngram=3).propose(4) == ()
    assert _index([], max_ngram=3).propose(4) == ()


def test_ngram_proposals_stop_at_the_requested_count_and_the_sequence_end() -> None:
    tokens = [1, 2, 3, 4, 5, 1]
    index = _index(tokens, max_ngram=2)
    assert index.propose(2) == (2, 3)
    assert index.propose(0) == ()
    # The match is followed by only the last token: a short draft, never padding.
    assert _index([3, 9, 3], max_ngram=2).propose(5) == (9, 3)
    assert _index([4, 4], max_ngram=2).propose(5) == (4,)


def test_ngram_repeated_gram_inside_one_extend_keeps_its_first_position() -> None:
    index = NgramIndex(max_ngram=2)
    index.extend([1, 2, 7, 1, 2, 8, 1, 2])
    assert index.propose(2) == (7, 1)  # (1, 2) first ended at 1, not at 4


@given(
    tokens=st.lists(st.integers(0, 4), max_size=60),
    cuts=st.lists(st.integers(0, 60), max_size=6),
    max_ngram=st.integers(1, 4),
    num_tokens=st.integers(0, 6),
)
def test_ngram_incremental_index_matches_brute_force(
    tokens: list[int], cuts: list[int], max_ngram: int, num_tokens: int
) -> None:
    index = NgramIndex(max_ngram)
    bounds = sorted({min(cut, len(tokens)) for cut in cuts} | {len(tokens)})
    start = 0
    for bound in bounds:
        index.extend(tokens[start:bound])
        start = bound
        assert index.propose(num_tokens) == _brute_force(tokens[:bound], max_ngram, num_tokens)


def test_ngram_proposer_follows_each_request_as_it_grows() -> None:
    proposer = NgramProposer(max_ngram=2)
    prompt = [1, 2, 3, 1]
    output: list[int] = []
    assert proposer.propose("a", prompt, output, 2) == (2, 3)
    assert proposer.propose("b", [9, 9], [], 2) == (9,)
    output += [2, 3]  # now ... 1, 2, 3: ending (2, 3) first at 1..2
    assert proposer.propose("a", prompt, output, 3) == (1, 2, 3)
    output += [7]
    assert proposer.propose("a", prompt, output, 3) == ()


def test_ngram_proposer_reindexes_a_sequence_that_changed() -> None:
    proposer = NgramProposer(max_ngram=2)
    assert proposer.propose("a", [1, 2, 1], [5, 1], 2) == (2, 1)
    # Same id, other tokens (e.g. the id was reused): answers must come from the new sequence.
    assert proposer.propose("a", [4, 6, 4], [], 2) == (6, 4)
    assert proposer.propose("a", [4, 6, 4, 8], [], 2) == ()
    proposer.drop(["a", "unknown"])
    assert proposer.propose("a", [3, 3], [], 2) == (3,)


def test_ngram_proposer_is_fast_on_a_long_sequence() -> None:
    rng = random.Random(0)
    prompt = [rng.randrange(32_000) for _ in range(4_000)]
    output: list[int] = []
    proposer = NgramProposer(max_ngram=3)
    start = time.perf_counter()
    proposer.propose("a", prompt, output, 5)
    first = time.perf_counter() - start
    steps = []
    for position in range(50):
        output.append(prompt[position * 7])
        start = time.perf_counter()
        proposer.propose("a", prompt, output, 5)
        steps.append(time.perf_counter() - start)
    # Loose bounds for a shared, busy CPU: indexing the prompt takes ~1 ms, a step ~5 us.
    assert first < 0.05
    assert sorted(steps)[len(steps) // 2] < 0.005
