"""Block hashes chain over whole prefixes; PrefixCache finds the longest cached run of them,
keeps one block per prefix, and forgets a block when it is evicted."""

from sluice.engine.kv_cache.prefix_cache import PrefixCache, hash_block


def test_hash_block_depends_on_tokens_and_the_whole_prefix() -> None:
    first = hash_block(None, [1, 2, 3, 4])

    assert hash_block(None, [1, 2, 3, 4]) == first
    assert hash_block(None, [1, 2, 3, 5]) != first
    assert hash_block(None, [4, 3, 2, 1]) != first
    second = hash_block(first, [5, 6, 7, 8])
    assert second == hash_block(hash_block(None, [1, 2, 3, 4]), [5, 6, 7, 8])
    # The same tokens after a different first block hash differently.
    assert hash_block(hash_block(None, [9, 2, 3, 4]), [5, 6, 7, 8]) != second
    assert hash_block(None, [5, 6, 7, 8]) != second


def test_hash_block_tells_large_token_ids_apart() -> None:
    assert hash_block(None, [2**31]) != hash_block(None, [0])
    assert hash_block(None, [1, 0]) != hash_block(None, [256])


def _chain(*blocks: list[int]) -> list[bytes]:
    hashes: list[bytes] = []
    for tokens in blocks:
        hashes.append(hash_block(hashes[-1] if hashes else None, tokens))
    return hashes


def test_prefix_cache_longest_match_stops_at_the_first_miss() -> None:
    cache = PrefixCache()
    a, b, c = _chain([1, 2], [3, 4], [5, 6])
    cache.add(10, a)
    cache.add(11, b)
    cache.add(12, c)

    assert cache.longest_match([a, b, c]) == [10, 11, 12]
    assert cache.longest_match([a, b]) == [10, 11]
    assert cache.longest_match(_chain([1, 2], [3, 9], [5, 6])) == [10]
    assert cache.longest_match(_chain([7, 7], [3, 4])) == []
    assert cache.longest_match([]) == []


def test_prefix_cache_keeps_the_first_block_of_a_prefix_cached_twice() -> None:
    cache = PrefixCache()
    (a,) = _chain([1, 2])

    cache.add(3, a)
    cache.add(5, a)  # a second request computed the same block meanwhile

    assert cache.longest_match([a]) == [3]
    assert cache.hash_of(5) is None
    assert len(cache) == 1


def test_prefix_cache_evict_forgets_the_block_and_its_prefix() -> None:
    cache = PrefixCache()
    a, b = _chain([1, 2], [3, 4])
    cache.add(0, a)
    cache.add(1, b)

    cache.evict(0)
    cache.evict(7)  # never cached: nothing to forget

    assert cache.longest_match([a, b]) == []
    assert cache.hash_of(0) is None and cache.hash_of(1) == b
    assert len(cache) == 1
