"""Tokenizes text and tells which bytes of the text each token covers, for /tokenize and
/chat_tokenize (contract 1.12). Offsets count UTF-8 bytes, as TGI's Rust tokenizer does."""

from dataclasses import dataclass
from itertools import accumulate

from transformers import PreTrainedTokenizerBase

from sluice.errors import ValidationError


@dataclass(frozen=True, slots=True)
class TokenSpan:
    token_id: int
    text: str
    """The covered text; "" for a token added by the tokenizer (a BOS) or without offsets."""
    start: int
    """Byte offset of the first covered byte."""
    stop: int
    """Byte offset just past the last covered byte."""


def token_spans(
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    *,
    add_special_tokens: bool,
    truncate: int | None = None,
) -> list[TokenSpan]:
    """Every token of `text` (the last `truncate` ones when set). A slow tokenizer has no
    offsets: its tokens all span 0..0 with no text, as in TGI."""
    has_offsets = bool(tokenizer.is_fast)
    try:
        encoded = tokenizer(
            text, add_special_tokens=add_special_tokens, return_offsets_mapping=has_offsets
        )
    except Exception as error:  # the tokenizer's own failure becomes TGI's rule 14
        raise ValidationError(f"tokenizer error {error}") from error
    token_ids = list(encoded["input_ids"])
    if not has_offsets:
        spans = [TokenSpan(token_id, "", 0, 0) for token_id in token_ids]
    else:
        # byte_offsets[i]: where character i starts, in bytes.
        byte_offsets = list(
            accumulate((len(char.encode("utf-8", "surrogatepass")) for char in text), initial=0)
        )
        spans = [
            TokenSpan(token_id, text[start:stop], byte_offsets[start], byte_offsets[stop])
            for token_id, (start, stop) in zip(token_ids, encoded["offset_mapping"], strict=True)
        ]
    return spans[-truncate:] if truncate else spans
