"""The only KV-cache API the scheduler uses: find a waiting request's cached prefix, give a
request room for its next tokens, cache its full blocks as they are computed, and take its
blocks back when it finishes or is preempted.

Freed blocks that hold a cached prefix stay cached and count as free: they are evicted, least
recently freed first, only when the pool hands them out again."""

from dataclasses import dataclass

from sluice.engine.kv_cache.block_pool import BlockId, BlockPool
from sluice.engine.kv_cache.prefix_cache import BlockHash, PrefixCache, hash_block
from sluice.engine.request import Request


@dataclass(frozen=True, slots=True)
class PrefixMatch:
    """The cached blocks of a waiting request's leading tokens, found before admission."""

    block_ids: tuple[BlockId, ...] = ()
    num_tokens: int = 0
    """Tokens those blocks hold: the request computes from here."""
    num_queried_tokens: int = 0
    """Known tokens of the request when it was looked up; 0 when it was not."""


NO_MATCH = PrefixMatch()


@dataclass(slots=True)
class PrefixCacheStats:
    """Running totals since start, counted when a looked-up request is admitted."""

    queried_tokens: int = 0
    hit_tokens: int = 0


class KVCacheManager:
    def __init__(self, num_blocks: int, block_size: int, *, prefix_caching: bool = True) -> None:
        self.block_size = block_size
        self.pool = BlockPool(num_blocks)
        self.prefix_cache = PrefixCache() if prefix_caching else None
        self.stats = PrefixCacheStats()

    @property
    def num_free_blocks(self) -> int:
        """Blocks no request holds, cached ones included (they are evictable)."""
        return self.pool.num_free_blocks

    @property
    def num_blocks(self) -> int:
        return self.pool.num_blocks

    def match_prefix(self, request: Request) -> PrefixMatch:
        """The longest cached prefix of a waiting request's known tokens. At least one token
        is left to compute (its step must produce logits), so only blocks before the last
        token match and no step ever writes into a shared block."""
        if self.prefix_cache is None or request.computes_every_position:
            return NO_MATCH
        limit = (request.num_tokens - 1) // self.block_size
        blocks = self.prefix_cache.longest_match(self._hashes(request, limit)[:limit])
        return PrefixMatch(tuple(blocks), len(blocks) * self.block_size, request.num_tokens)

    def blocks_needed(
        self, request: Request, num_new_tokens: int, prefix: PrefixMatch = NO_MATCH
    ) -> int:
        """Fresh blocks `request` lacks to hold its computed tokens (and `prefix`'s) plus
        `num_new_tokens` more."""
        total = request.num_computed_tokens + prefix.num_tokens + num_new_tokens
        held = len(request.block_ids) + len(prefix.block_ids)
        return max(0, -(-total // self.block_size) - held)

    def allocate_slots(
        self, request: Request, num_new_tokens: int, prefix: PrefixMatch = NO_MATCH
    ) -> bool:
        """Extend the request's block table for `num_new_tokens`; False if the cache is full.
        With a waiting request's `prefix`, the request first takes the prefix's blocks and
        counts its tokens as computed."""
        needed = self.blocks_needed(request, num_new_tokens, prefix)
        reclaimed = sum(1 for block in prefix.block_ids if self.pool.ref_count(block) == 0)
        if needed + reclaimed > self.pool.num_free_blocks:
            return False
        if prefix.num_queried_tokens:
            self._admit_prefix(request, prefix)
        fresh = self.pool.take(needed)
        if self.prefix_cache is not None:
            for block in fresh:
                self.prefix_cache.evict(block)
        request.block_ids.extend(fresh)
        return True

    def cache_blocks(self, request: Request) -> None:
        """Offer the request's newly filled blocks to the prefix cache; call once its
        computed tokens have advanced."""
        if self.prefix_cache is None:
            return
        num_full = request.num_computed_tokens // self.block_size
        if num_full <= request.num_cached_blocks:
            return
        hashes = self._hashes(request, num_full)
        for index in range(request.num_cached_blocks, num_full):
            self.prefix_cache.add(request.block_ids[index], hashes[index])
        request.num_cached_blocks = num_full

    def free(self, request: Request) -> None:
        """Release the request's blocks, tail first: a prefix's first blocks, the ones most
        likely shared, are the last to be evicted."""
        self.pool.release(reversed(request.block_ids))
        request.block_ids.clear()
        request.num_cached_blocks = 0

    def _admit_prefix(self, request: Request, prefix: PrefixMatch) -> None:
        # Hold the hits before taking fresh blocks, which could otherwise evict them.
        self.pool.hold(prefix.block_ids)
        request.block_ids.extend(prefix.block_ids)
        request.num_computed_tokens = prefix.num_tokens
        request.num_cached_blocks = len(prefix.block_ids)
        self.stats.queried_tokens += prefix.num_queried_tokens
        self.stats.hit_tokens += prefix.num_tokens

    def _hashes(self, request: Request, num_blocks: int) -> list[BlockHash]:
        """The chained hashes of the request's first `num_blocks` full blocks."""
        hashes = request.block_hashes
        size = self.block_size
        for index in range(len(hashes), num_blocks):
            parent = hashes[-1] if hashes else None
            hashes.append(hash_block(parent, request.token_ids_from(index * size, size)))
        return hashes
