"""Finds stop strings in generated text.

TGI only tests whether the text ends with a stop string after each token, so a stop string
that ends inside a token never fires (TGI issue #1039). Here the search covers every position
the newest text could complete, so it fires wherever the string ends; the output keeps the stop
string, as TGI's does, and is cut right after it."""

from collections.abc import Sequence


class StopChecker:
    def __init__(self, stop: Sequence[str]) -> None:
        self._stop = [s for s in stop if s]
        self._longest = max((len(s) for s in self._stop), default=0)

    def find(self, text: str, num_new_chars: int) -> int | None:
        """End offset in `text` of the earliest stop string that the last `num_new_chars`
        characters complete, or None."""
        if not self._stop or num_new_chars <= 0:
            return None
        search_from = max(0, len(text) - num_new_chars - self._longest + 1)
        ends = [
            found + len(stop)
            for stop in self._stop
            if (found := text.find(stop, search_from)) != -1
            and found + len(stop) > len(text) - num_new_chars
        ]
        return min(ends, default=None)
