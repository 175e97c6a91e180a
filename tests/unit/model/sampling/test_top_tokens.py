"""top_tokens: best first, ties at the edge all kept, filtered (-inf) tokens never listed."""

import torch

from sluice.model.sampling.top_tokens import top_tokens

INF = float("inf")


def test_top_tokens_lists_the_n_best_per_row_best_first() -> None:
    log_probs = torch.tensor([[-3.0, -0.5, -2.0, -1.0], [-1.0, -2.0, -3.0, -4.0]])

    top = top_tokens(log_probs, [2, 3])

    assert top.token_ids == [[1, 3], [0, 1, 2]]
    assert top.logprobs == [[-0.5, -1.0], [-1.0, -2.0, -3.0]]


def test_top_tokens_keeps_every_tie_at_the_edge_like_tgi() -> None:
    log_probs = torch.tensor([[-1.0, -2.0, -2.0, -2.0, -5.0]])

    top = top_tokens(log_probs, [2])

    assert top.token_ids[0][0] == 0
    assert sorted(top.token_ids[0][1:]) == [1, 2, 3]


def test_top_tokens_never_lists_filtered_tokens() -> None:
    log_probs = torch.tensor([[-INF, -0.1, -INF, -2.4], [-INF, -INF, 0.0, -INF]])

    top = top_tokens(log_probs, [3, 5])

    assert top.token_ids == [[1, 3], [2]]


def test_top_tokens_rows_asking_for_none_get_empty_lists() -> None:
    log_probs = torch.zeros(3, 6)  # all tied: a row that asks for nothing must not widen k

    top = top_tokens(log_probs, [0, 1, 0])

    assert top.token_ids[0] == [] and top.token_ids[2] == []
    assert len(top.token_ids[1]) == 6  # one requested, six tied for first
    assert top_tokens(log_probs, [0, 0, 0]).token_ids == [[], [], []]
