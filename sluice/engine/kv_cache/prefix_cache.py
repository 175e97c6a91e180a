"""Which blocks hold the K/V of which token prefixes, so that requests sharing a prefix (a
system prompt, a chat history) reuse its blocks instead of computing them again.

Only full blocks are cached. A block's hash covers its own tokens and, through its parent's
hash, every token before it: equal hashes mean equal prefixes, so one dictionary lookup per
block finds the longest cached prefix. The digest is cryptographic (BLAKE2b, 128 bits) rather
than Python's `hash`, because a collision would serve one request another's K/V."""

import hashlib
from array import array
from collections.abc import Sequence

from sluice.engine.kv_cache.block_pool import BlockId

BlockHash = bytes


def hash_block(parent: BlockHash | None, token_ids: Sequence[int]) -> BlockHash:
    """The hash of a full block with these tokens, after the block whose hash is `parent`
    (None for a sequence's first block)."""
    digest = hashlib.blake2b(parent or b"", digest_size=16)
    digest.update(array("q", token_ids).tobytes())
    return digest.digest()


class PrefixCache:
    """hash -> block for full blocks whose K/V are computed. A cached block may be held by
    requests or free; a free one stays cached until the pool hands it out again."""

    def __init__(self) -> None:
        self._blocks: dict[BlockHash, BlockId] = {}
        self._hashes: dict[BlockId, BlockHash] = {}

    def __len__(self) -> int:
        return len(self._blocks)

    def longest_match(self, hashes: Sequence[BlockHash]) -> list[BlockId]:
        """The cached blocks of the longest run of `hashes` from the first, in order."""
        blocks = []
        for block_hash in hashes:
            block = self._blocks.get(block_hash)
            if block is None:
                break
            blocks.append(block)
        return blocks

    def add(self, block: BlockId, block_hash: BlockHash) -> None:
        """Cache `block` under `block_hash`, unless that prefix is already cached elsewhere (two
        requests computed it at once: the other copy stays uncached and is freed plainly)."""
        if block_hash not in self._blocks and block not in self._hashes:
            self._blocks[block_hash] = block
            self._hashes[block] = block_hash

    def evict(self, block: BlockId) -> None:
        """Forget what `block` held, if it was cached: it is about to be overwritten."""
        block_hash = self._hashes.pop(block, None)
        if block_hash is not None:
            del self._blocks[block_hash]

    def hash_of(self, block: BlockId) -> BlockHash | None:
        return self._hashes.get(block)
