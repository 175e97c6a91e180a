import pytest
import torch

from sluice.distributed.sharding import Piece, copy_pieces, even_split, shard_heads


def test_even_split_gives_the_first_shards_the_extra_units() -> None:
    assert [even_split(130, 3, rank) for rank in range(3)] == [
        Piece(0, 44),
        Piece(44, 43),
        Piece(87, 43),
    ]
    assert [even_split(96, 2, rank, unit=32) for rank in range(2)] == [Piece(0, 64), Piece(64, 32)]


def test_even_split_refuses_more_shards_than_units() -> None:
    with pytest.raises(ValueError, match="cannot feed 4 shards"):
        even_split(96, 4, 0, unit=32)


def test_nine_heads_over_three_kv_heads_on_two_shards() -> None:
    """The default model's heads: 5 and 4 query heads; the middle KV head's group straddles
    the shards, so both hold it, and each pads its short group to three slots."""
    first, second = (shard_heads(9, 3, 64, 2, rank) for rank in range(2))
    assert first.query_heads == (0, 1, 2, 3, 4, None)
    assert first.kv_heads == (0, 1)
    assert second.query_heads == (5, None, None, 6, 7, 8)
    assert second.kv_heads == (1, 2)
    assert first.query_pieces() == [Piece(0, 320), Piece(None, 64)]
    assert second.query_pieces() == [Piece(320, 64), Piece(None, 128), Piece(384, 192)]
    assert second.kv_pieces() == [Piece(64, 128)]


@pytest.mark.parametrize(
    ("num_shards", "expected"),
    [
        (3, [((0, 1, 2), (0,)), ((3, 4, 5), (1,)), ((6, 7, 8), (2,))]),
        (4, [((0, 1, 2), (0,)), ((3, 4), (1,)), ((5, 6), (1, 2)), ((7, 8), (2,))]),
    ],
)
def test_heads_that_fall_into_whole_groups_need_no_padding(
    num_shards: int, expected: list[tuple[tuple[int, ...], tuple[int, ...]]]
) -> None:
    shards = [shard_heads(9, 3, 64, num_shards, rank) for rank in range(num_shards)]
    assert [(s.query_heads, s.kv_heads) for s in shards] == expected


def test_multi_query_attention_splits_query_heads_and_replicates_the_kv_head() -> None:
    shards = [shard_heads(71, 1, 64, 2, rank) for rank in range(2)]
    assert [s.num_heads for s in shards] == [36, 35]
    assert [s.kv_heads for s in shards] == [(0,), (0,)]


def test_configurations_that_cannot_shard_are_refused_with_their_numbers() -> None:
    with pytest.raises(ValueError, match="10 shards for 9 attention heads"):
        shard_heads(9, 3, 64, 10, 0)
    with pytest.raises(ValueError, match="9 query heads do not form equal groups over 2"):
        shard_heads(9, 2, 64, 2, 0)


def test_copy_pieces_reads_the_pieces_and_zeroes_padding() -> None:
    loaded = torch.arange(12.0).view(6, 2)
    target = torch.full((4, 2), -1.0)
    copy_pieces(target, loaded, 0, [Piece(4, 2), Piece(None, 1), Piece(0, 1)])
    assert target.tolist() == [[8, 9], [10, 11], [0, 0], [0, 1]]
    with pytest.raises(ValueError, match="cover 3 features of a shard that holds 4"):
        copy_pieces(target, loaded, 0, [Piece(0, 3)])
