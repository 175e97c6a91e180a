"""BlockPool: ref counts, no double free, reuse in the order blocks were freed, holding free
blocks again; a property test against a plain model of the pool."""

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.engine.kv_cache.block_pool import BlockPool


def test_block_pool_rejects_an_empty_cache() -> None:
    with pytest.raises(ValueError, match="at least one block"):
        BlockPool(0)


def test_block_pool_take_hands_out_distinct_blocks_held_once() -> None:
    pool = BlockPool(6)

    first, second = pool.take(2), pool.take(3)

    assert len(set(first + second)) == 5
    assert pool.num_free_blocks == 1
    assert all(pool.ref_count(block) == 1 for block in first + second)


def test_block_pool_take_more_than_free_raises_and_changes_nothing() -> None:
    pool = BlockPool(4)
    pool.take(3)

    with pytest.raises(ValueError, match="asked for 2 blocks with 1 free"):
        pool.take(2)

    assert pool.num_free_blocks == 1
    assert pool.take(1) == [3]


def test_block_pool_release_of_a_free_block_raises() -> None:
    pool = BlockPool(4)
    (block,) = pool.take(1)
    pool.release([block])

    with pytest.raises(ValueError, match="released more often than it was taken"):
        pool.release([block])
    with pytest.raises(ValueError, match="released more often than it was taken"):
        pool.release([3])  # never taken
    assert pool.num_free_blocks == 4


def test_block_pool_reuses_freed_blocks_oldest_first() -> None:
    pool = BlockPool(4)
    pool.take(4)

    pool.release([2])
    pool.release([0, 3])

    assert pool.take(3) == [2, 0, 3]


def test_block_pool_hands_out_never_used_blocks_before_freed_ones() -> None:
    pool = BlockPool(4)
    taken = pool.take(2)

    pool.release(taken)

    assert pool.take(4) == [2, 3, 0, 1]


def test_block_pool_hold_takes_a_free_block_out_of_the_queue() -> None:
    pool = BlockPool(4)
    pool.take(4)
    pool.release([0, 1, 2])

    pool.hold([1, 3])  # 1 was free, 3 was held

    assert (pool.ref_count(1), pool.ref_count(3)) == (1, 2)
    assert pool.num_free_blocks == 2
    assert pool.take(2) == [0, 2]
    pool.release([3, 3, 1])
    assert pool.take(2) == [3, 1]


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("take"), st.integers(0, 10)),
        st.tuples(st.just("release"), st.integers(0, 10)),
        st.tuples(st.just("hold"), st.integers(0, 3)),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(num_blocks=st.integers(1, 10), ops=_ops, data=st.data())
def test_block_pool_random_take_release_matches_model(
    num_blocks: int, ops: list[tuple[str, int]], data: st.DataObject
) -> None:
    pool = BlockPool(num_blocks)
    model_free = deque(range(num_blocks))
    held: list[int] = []

    for op, count in ops:
        if op == "take":
            if count > len(model_free):
                with pytest.raises(ValueError):
                    pool.take(count)
            else:
                blocks = pool.take(count)
                assert blocks == [model_free.popleft() for _ in range(count)]
                held.extend(blocks)
        elif op == "hold":
            chosen = data.draw(st.lists(st.integers(0, num_blocks - 1), max_size=count))
            pool.hold(chosen)
            for block in chosen:
                if block in model_free:
                    model_free.remove(block)
                held.append(block)
        elif held:
            chosen = data.draw(st.permutations(held))[:count]
            pool.release(chosen)
            for block in chosen:
                held.remove(block)
                if block not in held:
                    model_free.append(block)
        assert pool.num_free_blocks == len(model_free)
        assert len(set(held)) + pool.num_free_blocks == num_blocks
        for block in range(num_blocks):
            assert pool.ref_count(block) == held.count(block)

    pool.release(held)
    for index, block in enumerate(held):
        if block not in held[index + 1 :]:  # its last holder lets go: it joins the queue
            model_free.append(block)
    assert pool.take(num_blocks) == list(model_free)
