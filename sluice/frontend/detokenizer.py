"""Turns a request's generated token ids into text one token at a time.

Decoding a token alone loses context (leading spaces, multi-byte characters split over
tokens), so each step decodes a short window ending at the new token and emits what it adds to
the window without it. A window ending in U+FFFD means the token ended inside a UTF-8
character: emit nothing and wait for the bytes that complete it. Special tokens are emitted
with their literal text and kept out of the running text, so the final text is the
concatenation of the non-special token texts; the one exception is an incomplete character
right before a final special token (EOS), which only the final text carries, as TGI's does."""

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

PROMPT_CONTEXT_TOKENS = 5
"""Prompt tokens kept as decoding context, so the first output token decodes with its space."""


@dataclass(frozen=True, slots=True)
class DecodedToken:
    text: str
    is_special: bool


class IncrementalDetokenizer:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompt_token_ids: Sequence[int]):
        self._tokenizer = tokenizer
        # Vocabulary entries flagged special count too, not only the named special tokens.
        self._special_ids = frozenset(tokenizer.all_special_ids) | {
            token_id for token_id, token in tokenizer.added_tokens_decoder.items() if token.special
        }
        self._ids = list(prompt_token_ids[-PROMPT_CONTEXT_TOKENS:])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)
        self.text = ""
        """Every non-special token's text so far."""

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special_ids

    def add(self, token_id: int, *, is_last: bool = False) -> DecodedToken:
        """Text of `token_id`; with `is_last`, flush bytes held back for an incomplete character."""
        if token_id in self._special_ids:
            if is_last:
                self.text += self._flush()
            text = self._tokenizer.convert_ids_to_tokens(token_id)
            return DecodedToken(text=text, is_special=True)
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        window = self._decode(self._ids[self._prefix_offset :])
        held_back = window.endswith("\ufffd") and not is_last
        if len(window) <= len(prefix) or held_back:
            return DecodedToken(text="", is_special=False)
        text = window[len(prefix) :]
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        self.text += text
        return DecodedToken(text=text, is_special=False)

    def _flush(self) -> str:
        """Text held back for an incomplete character, as the final decode renders it."""
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        return self._decode(self._ids[self._prefix_offset :])[len(prefix) :]

    def _decode(self, token_ids: Sequence[int]) -> str:
        return self._tokenizer.decode(token_ids, skip_special_tokens=False)
