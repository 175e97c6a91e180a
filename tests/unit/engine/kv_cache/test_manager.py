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


# Prefix caching: blocks of 4 tokens; `_computed` runs a request's tokens as if computed.


def _tokens_request(
    request_id: str, tokens: list[int], sampling: SamplingParams | None = None
) -> Request:
    return Request(request_id, tokens, sampling or SamplingParams(max_new_tokens=4))


def _computed(manager: KVCacheManager, request: Request) -> Request:
    """Admit `request` (reusing what the cache has) and compute all its known tokens."""
    prefix = manager.match_prefix(request)
    assert manager.allocate_slots(request, request.num_tokens - prefix.num_tokens, prefix)
    request.num_computed_tokens = request.num_tokens
    manager.cache_blocks(request)
    return request


def test_kv_cache_manager_second_request_reuses_a_shared_prefix() -> None:
    manager = KVCacheManager(num_blocks=8, block_size=4)
    first = _computed(manager, _tokens_request("a", list(range(10))))
    second = _tokens_request("b", list(range(8)) + [50, 51, 52, 53])

    prefix = manager.match_prefix(second)
    assert prefix.block_ids == tuple(first.block_ids[:2])
    assert (prefix.num_tokens, prefix.num_queried_tokens) == (8, 12)
    assert manager.allocate_slots(second, 4, prefix)

    assert second.block_ids[:2] == first.block_ids[:2]
    assert second.block_ids[2] not in first.block_ids
    assert second.num_computed_tokens == 8
    assert [manager.pool.ref_count(b) for b in second.block_ids] == [2, 2, 1]
    assert manager.num_free_blocks == 8 - 4
    assert (manager.stats.queried_tokens, manager.stats.hit_tokens) == (10 + 12, 8)


def test_kv_cache_manager_shared_blocks_stay_held_until_their_last_holder_frees() -> None:
    manager = KVCacheManager(num_blocks=8, block_size=4)
    first = _computed(manager, _tokens_request("a", list(range(10))))
    second = _computed(manager, _tokens_request("b", list(range(9))))
    shared = tuple(first.block_ids[:2])

    manager.free(first)
    assert [manager.pool.ref_count(b) for b in shared] == [1, 1]
    assert manager.num_free_blocks == 8 - 3
    manager.free(second)

    assert manager.num_free_blocks == 8  # cached blocks nobody holds count as free
    assert manager.match_prefix(_tokens_request("c", list(range(12)))).block_ids == shared


def test_kv_cache_manager_matches_only_blocks_before_the_last_token() -> None:
    manager = KVCacheManager(num_blocks=8, block_size=4)
    _computed(manager, _tokens_request("a", list(range(13))))

    for num_tokens, num_matched in ((3, 0), (4, 0), (5, 1), (8, 1), (9, 2), (12, 2), (13, 3)):
        prefix = manager.match_prefix(_tokens_request("b", list(range(num_tokens))))
        assert prefix.num_tokens == 4 * num_matched == 4 * ((num_tokens - 1) // 4)
        assert prefix.num_tokens < num_tokens


def test_kv_cache_manager_evicts_the_least_recently_freed_cached_block_first() -> None:
    manager = KVCacheManager(num_blocks=4, block_size=4)
    old = _computed(manager, _tokens_request("old", list(range(100, 105))))  # blocks 0, 1
    new = _computed(manager, _tokens_request("new", list(range(200, 205))))  # blocks 2, 3
    manager.free(old)  # frees 1 (partial, uncached), then 0
    manager.free(new)  # frees 3, then 2
    assert manager.num_free_blocks == 4

    filler = _tokens_request("filler", list(range(300, 305)))
    assert manager.allocate_slots(filler, 5)

    assert filler.block_ids == [1, 0]  # the old prefix goes, the newer one stays
    assert manager.match_prefix(_tokens_request("x", list(range(100, 105)))).block_ids == ()
    assert manager.match_prefix(_tokens_request("y", list(range(200, 205)))).block_ids == (2,)


def test_kv_cache_manager_prefix_hit_that_reclaims_free_blocks_needs_room_for_both() -> None:
    manager = KVCacheManager(num_blocks=4, block_size=4)
    manager.free(_computed(manager, _tokens_request("a", list(range(9)))))  # 2 cached, free
    holder = _tokens_request("holder", list(range(500, 504)))
    assert manager.allocate_slots(holder, 4)  # takes the uncached block and one more
    request = _tokens_request("b", list(range(8)) + [60] * 8)
    prefix = manager.match_prefix(request)
    assert len(prefix.block_ids) == 2 and manager.num_free_blocks == 3

    # 2 reclaimed + 2 fresh > 3 free: refused, and nothing changes.
    assert not manager.allocate_slots(request, 8, prefix)
    assert request.block_ids == [] and request.num_computed_tokens == 0
    assert manager.num_free_blocks == 3
    assert manager.stats.hit_tokens == 0

    assert manager.allocate_slots(request, 4, prefix)  # 2 reclaimed + 1 fresh
    assert manager.num_free_blocks == 0
    assert request.block_ids[:2] == list(prefix.block_ids)


@pytest.mark.parametrize(
    "sampling",
    [
        SamplingParams(max_new_tokens=4, repetition_penalty=1.1),
        SamplingParams(max_new_tokens=4, frequency_penalty=0.5),
        SamplingParams(max_new_tokens=4, prompt_logprobs=True),
    ],
)
def test_kv_cache_manager_requests_needing_every_position_skip_the_lookup(
    sampling: SamplingParams,
) -> None:
    manager = KVCacheManager(num_blocks=8, block_size=4)
    cached = _computed(manager, _tokens_request("a", list(range(9))))
    queried = manager.stats.queried_tokens

    request = _tokens_request("b", list(range(9)), sampling)

    assert manager.match_prefix(request).num_queried_tokens == 0
    _computed(manager, request)
    assert request.block_ids[0] != cached.block_ids[0]  # computed again from position 0
    assert manager.stats.queried_tokens == queried
    # Their blocks are still offered to the cache: a duplicate of a's here, so not cached.
    assert manager.prefix_cache is not None
    assert manager.prefix_cache.hash_of(request.block_ids[0]) is None


def test_kv_cache_manager_prompt_logprobs_request_may_reuse_once_it_has_a_token() -> None:
    manager = KVCacheManager(num_blocks=8, block_size=4)
    _computed(manager, _tokens_request("a", list(range(9))))
    request = _tokens_request("b", list(range(8)), SamplingParams(4, prompt_logprobs=True))

    request.output_token_ids.append(8)  # preempted after its first token

    assert manager.match_prefix(request).num_tokens == 8


def test_kv_cache_manager_caches_blocks_as_they_fill() -> None:
    manager = KVCacheManager(num_blocks=8, block_size=4)
    request = _tokens_request("a", list(range(6)))
    assert manager.allocate_slots(request, 6)
    request.num_computed_tokens = 3
    manager.cache_blocks(request)
    assert request.num_cached_blocks == 0

    request.num_computed_tokens = 6
    manager.cache_blocks(request)

    assert request.num_cached_blocks == 1
    probe = _tokens_request("b", list(range(6)))
    assert manager.match_prefix(probe).block_ids == (request.block_ids[0],)


def test_kv_cache_manager_without_prefix_caching_never_matches() -> None:
    manager = KVCacheManager(num_blocks=8, block_size=4, prefix_caching=False)
    _computed(manager, _tokens_request("a", list(range(9))))

    prefix = manager.match_prefix(_tokens_request("b", list(range(9))))

    assert prefix.block_ids == () and prefix.num_queried_tokens == 0
    assert (manager.stats.queried_tokens, manager.stats.hit_tokens) == (0, 0)
