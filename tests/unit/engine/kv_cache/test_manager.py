"""KVCacheManager: how many blocks a request lacks, all-or-nothing allocation, and freeing."""

import pytest

from sluice.engine.kv_cache.manager import KVCacheManager
from sluice.engine.request import Request
from sluice.sampling_params import SamplingParams


def _request(prompt_len: int = 8) -> Request:
    return Request("r", list(range(prompt_len)), SamplingParams(max_new_tokens=4))


@pytest.mark.parametrize(
    ("computed", "held", "new", "needed"),
    [
        (0, 0, 1, 1),
        (0, 0, 4, 1),
        (0, 0, 5, 2),
        (4, 1, 1, 1),  # the block is full: the next token needs a new one
        (5, 2, 3, 0),  # fills the second block exactly
        (5, 2, 4, 1),
        (8, 2, 0, 0),
        (0, 3, 2, 0),  # holds more than it needs (never negative)
    ],
)
def test_kv_cache_manager_blocks_needed(computed: int, held: int, new: int, needed: int) -> None:
    manager = KVCacheManager(num_blocks=8, block_size=4)
    request = _request()
    request.num_computed_tokens = computed
    request.block_ids = list(range(held))

    assert manager.blocks_needed(request, new) == needed


def test_kv_cache_manager_allocate_slots_extends_the_block_table() -> None:
    manager = KVCacheManager(num_blocks=8, block_size=4)
    request = _request()

    assert manager.allocate_slots(request, 6)
    request.num_computed_tokens = 6
    assert manager.allocate_slots(request, 3)

    assert request.block_ids == [0, 1, 2]
    assert manager.num_free_blocks == 5


def test_kv_cache_manager_allocate_slots_is_all_or_nothing() -> None:
    manager = KVCacheManager(num_blocks=3, block_size=4)
    request = _request()
    assert manager.allocate_slots(request, 8)

    request.num_computed_tokens = 8
    assert not manager.allocate_slots(request, 9)  # needs 3 more blocks, 1 is free

    assert request.block_ids == [0, 1]
    assert manager.num_free_blocks == 1


def test_kv_cache_manager_free_returns_blocks_tail_first() -> None:
    manager = KVCacheManager(num_blocks=4, block_size=4)
    request = _request()
    manager.allocate_slots(request, 12)

    manager.free(request)

    assert request.block_ids == []
    assert manager.num_free_blocks == manager.num_blocks == 4
    assert manager.pool.take(4) == [3, 2, 1, 0]
