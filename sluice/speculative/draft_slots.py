"""Which slots of the shared KV blocks hold the draft model's K/V (see draft_model.py).

The draft model's cache uses the target's block ids, but the draft computes only for requests
that draft, so its slots lag behind the target's. A slot's draft K/V is *valid* when it was
computed for the token (and the whole prefix before it) that the target's cache holds in that
slot. This record keeps, per block, how many leading slots are valid. Every step that writes a
request's slots either has the draft compute them too (`record`) or invalidates them (`cut`),
so validity never outlives what the target holds there: a block freed and handed to another
request is cut when its new owner's tokens are written. A block that the prefix cache shares
is never written again, so a request that finds it keeps what the draft computed there."""

from collections.abc import Sequence


class DraftSlots:
    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self._valid: dict[int, int] = {}
        """Block id -> number of its leading slots whose draft K/V is valid."""

    def valid_prefix(self, block_ids: Sequence[int], end: int) -> int:
        """How many of the request's first `end` positions hold valid draft K/V."""
        size = self.block_size
        position = 0
        for block_id in block_ids:
            if position >= end:
                break
            valid = self._valid.get(block_id, 0)
            position += valid
            if valid < size:
                break
        return min(position, end)

    def record(self, block_ids: Sequence[int], first: int, end: int) -> None:
        """The draft's K/V at positions first..end-1 of the request is valid, and positions
        before `first` were already; nothing from `end` on can be trusted."""
        size = self.block_size
        for index in range(first // size, -(-end // size)):
            self._valid[block_ids[index]] = min(size, end - index * size)
        self.cut(block_ids, end)

    def cut(self, block_ids: Sequence[int], end: int) -> None:
        """The request's slots from position `end` on no longer hold what the draft computed
        there (the target writes other tokens, or a rejected draft)."""
        size = self.block_size
        first_index = end // size
        if first_index < len(block_ids) and end % size:
            block_id = block_ids[first_index]
            self._valid[block_id] = min(self._valid.get(block_id, 0), end % size)
            first_index += 1
        for block_id in block_ids[first_index:]:
            self._valid.pop(block_id, None)
