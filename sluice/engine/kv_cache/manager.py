"""The only KV-cache API the scheduler uses: give a request room for its next tokens, and take
its blocks back when it finishes or is preempted."""

from sluice.engine.kv_cache.block_pool import BlockPool
from sluice.engine.request import Request


class KVCacheManager:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.block_size = block_size
        self.pool = BlockPool(num_blocks)

    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free_blocks

    @property
    def num_blocks(self) -> int:
        return self.pool.num_blocks

    def blocks_needed(self, request: Request, num_new_tokens: int) -> int:
        """Blocks `request` lacks to hold its computed tokens plus `num_new_tokens` more."""
        total = request.num_computed_tokens + num_new_tokens
        return max(0, -(-total // self.block_size) - len(request.block_ids))

    def allocate_slots(self, request: Request, num_new_tokens: int) -> bool:
        """Extend the request's block table for `num_new_tokens`; False if the cache is full."""
        needed = self.blocks_needed(request, num_new_tokens)
        if needed > self.pool.num_free_blocks:
            return False
        request.block_ids.extend(self.pool.take(needed))
        return True

    def free(self, request: Request) -> None:
        self.pool.release(reversed(request.block_ids))
        request.block_ids.clear()
