"""The KV blocks of the cache: which are free, and how many holders each in-use block has.

A block returns to the free queue when its last holder releases it. Freed blocks are reused in
the order they were freed (oldest first), so the prefix cache keeps recently freed blocks
longest; a cached free block can also be held again (`hold`), which takes it out of the
queue."""

from collections import OrderedDict
from collections.abc import Iterable

BlockId = int


class BlockPool:
    def __init__(self, num_blocks: int) -> None:
        if num_blocks <= 0:
            raise ValueError(f"a KV cache needs at least one block; got {num_blocks}")
        self.num_blocks = num_blocks
        self._free: OrderedDict[BlockId, None] = OrderedDict.fromkeys(range(num_blocks))
        """Free blocks in eviction order, oldest first: an ordered set with O(1) removal."""
        self._ref_counts = [0] * num_blocks

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    def take(self, count: int) -> list[BlockId]:
        """`count` free blocks, oldest first, each now held once. The caller checks there are
        enough, and forgets whatever the blocks held before."""
        if count > len(self._free):
            raise ValueError(f"asked for {count} blocks with {len(self._free)} free")
        blocks = [self._free.popitem(last=False)[0] for _ in range(count)]
        for block in blocks:
            self._ref_counts[block] = 1
        return blocks

    def hold(self, blocks: Iterable[BlockId]) -> None:
        """One more holder for each of `blocks`, which may be free (they leave the queue)."""
        for block in blocks:
            if self._ref_counts[block] == 0:
                del self._free[block]
            self._ref_counts[block] += 1

    def release(self, blocks: Iterable[BlockId]) -> None:
        for block in blocks:
            if self._ref_counts[block] <= 0:
                raise ValueError(f"block {block} released more often than it was taken")
            self._ref_counts[block] -= 1
            if self._ref_counts[block] == 0:
                self._free[block] = None

    def ref_count(self, block: BlockId) -> int:
        return self._ref_counts[block]
