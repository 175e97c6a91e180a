"""N-gram drafts: guess a request's next tokens by copying what followed an earlier occurrence
of the sequence's own ending (prompt lookup), with no model at all.

TGI's rule (`--speculate N` on a model without Medusa heads) copies what followed the *first*
earlier occurrence of the last token. Here the longest ending that occurred before wins: the
last `max_ngram` tokens, then fewer, down to the last token alone, each at its first earlier
occurrence; `max_ngram=1` is exactly TGI's rule. Each sequence keeps an index from n-gram to
its first occurrence, extended as tokens arrive, so a step costs O(max_ngram) lookups
whatever the sequence length."""

from collections.abc import Iterable, Sequence
from itertools import chain

from sluice.model.step import RequestId


class NgramIndex:
    """The first occurrence of every n-gram (1 <= n <= max_ngram) of one growing sequence."""

    def __init__(self, max_ngram: int) -> None:
        if max_ngram < 1:
            raise ValueError(f"max_ngram must be at least 1, got {max_ngram}")
        self.max_ngram = max_ngram
        self.token_ids: list[int] = []
        self._first_end: dict[tuple[int, ...], int] = {}
        """n-gram -> position of its last token at its first occurrence."""

    def __len__(self) -> int:
        return len(self.token_ids)

    def extend(self, token_ids: Iterable[int]) -> None:
        """Append tokens and index the n-grams that end at each of them."""
        tokens = self.token_ids
        start = len(tokens)
        tokens.extend(token_ids)
        found: dict[tuple[int, ...], int] = {}
        for n in range(1, self.max_ngram + 1):
            first = max(start, n - 1)  # the first new position an n-gram can end at
            shifted = (tokens[first - n + 1 + i :] for i in range(n))  # the i-th token of each gram
            grams = list(zip(*shifted, strict=False))  # as many as the shortest slice: new ends
            # Built back to front, so that a gram repeated among the new tokens keeps its first end.
            found.update(zip(reversed(grams), range(len(tokens) - 1, first - 1, -1), strict=True))
        if not self._first_end:  # the bulk case (a whole prompt): no older occurrence to keep
            self._first_end = found
            return
        for gram, end in found.items():
            self._first_end.setdefault(gram, end)

    def propose(self, num_tokens: int) -> tuple[int, ...]:
        """Up to `num_tokens` tokens that followed the longest earlier match of the ending."""
        tokens = self.token_ids
        last = len(tokens) - 1
        if num_tokens <= 0 or last < 1:
            return ()
        for n in range(min(self.max_ngram, last), 0, -1):
            end = self._first_end[tuple(tokens[last - n + 1 :])]
            if end < last:  # an occurrence before the ending itself
                return tuple(tokens[end + 1 : end + 1 + num_tokens])
        return ()


class NgramProposer:
    """N-gram drafts for many requests: one index per request, fed from its tokens so far.

    A request's tokens only grow (rejected drafts never join them), so each call indexes just
    the tokens that arrived since the last one; a sequence that changed otherwise is
    re-indexed from scratch."""

    def __init__(self, max_ngram: int = 3) -> None:
        self.max_ngram = max_ngram
        self._indexes: dict[RequestId, NgramIndex] = {}

    def propose(
        self,
        request_id: RequestId,
        prompt_token_ids: Sequence[int],
        output_token_ids: Sequence[int],
        num_tokens: int,
    ) -> tuple[int, ...]:
        """Up to `num_tokens` drafts to follow prompt + output; empty when nothing matches."""
        index = self._synced(request_id, prompt_token_ids, output_token_ids)
        return index.propose(num_tokens)

    def drop(self, request_ids: Iterable[RequestId]) -> None:
        for request_id in request_ids:
            self._indexes.pop(request_id, None)

    def _synced(
        self,
        request_id: RequestId,
        prompt_token_ids: Sequence[int],
        output_token_ids: Sequence[int],
    ) -> NgramIndex:
        num_prompt = len(prompt_token_ids)
        index = self._indexes.get(request_id)
        if index is not None and not _extends(index, prompt_token_ids, output_token_ids):
            index = None
        if index is None:
            index = self._indexes[request_id] = NgramIndex(self.max_ngram)
        start = len(index)
        if start < num_prompt:
            index.extend(chain(prompt_token_ids[start:], output_token_ids))
        else:
            index.extend(output_token_ids[start - num_prompt :])
        return index


def _extends(
    index: NgramIndex, prompt_token_ids: Sequence[int], output_token_ids: Sequence[int]
) -> bool:
    """Whether prompt + output may continue what the index holds. Only its last token is
    compared: a full check would cost O(length) per step, and sequences only ever grow."""
    last = len(index) - 1
    num_prompt = len(prompt_token_ids)
    if last < 0:
        return True
    if last >= num_prompt + len(output_token_ids):
        return False
    if last < num_prompt:
        return prompt_token_ids[last] == index.token_ids[last]
    return output_token_ids[last - num_prompt] == index.token_ids[last]
