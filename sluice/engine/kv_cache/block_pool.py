"""The KV blocks of the cache: which are free, and how many holders each in-use block has.

A block returns to the free list when its last holder releases it. Freed blocks are reused in
the order they were freed (oldest first), so a prefix cache can later find recently freed
blocks still intact."""

from collections import deque
from collections.abc import Iterable

BlockId = int


class BlockPool:
    def __init__(self, num_blocks: int) -> None:
        if num_blocks <= 0:
            raise ValueError(f"a KV cache needs at least one block; got {num_blocks}")
        self.num_blocks = num_blocks
        self._free: deque[BlockId] = deque(range(num_blocks))
        self._ref_counts = [0] * num_blocks

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    def take(self, count: int) -> list[BlockId]:
        """`count` free blocks, each now held once. The caller checks there are enough."""
        if count > len(self._free):
            raise ValueError(f"asked for {count} blocks with {len(self._free)} free")
        blocks = [self._free.popleft() for _ in range(count)]
        for block in blocks:
            self._ref_counts[block] = 1
        return blocks

    def release(self, blocks: Iterable[BlockId]) -> None:
        for block in blocks:
            if self._ref_counts[block] <= 0:
                raise ValueError(f"block {block} released more often than it was taken")
            self._ref_counts[block] -= 1
            if self._ref_counts[block] == 0:
                self._free.append(block)

    def ref_count(self, block: BlockId) -> int:
        return self._ref_counts[block]
