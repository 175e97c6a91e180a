"""token_spans: byte offsets into the text, as TGI's /tokenize reports them."""

from transformers import PreTrainedTokenizerBase

from sluice.frontend.token_spans import token_spans


def test_token_spans_are_byte_offsets(tokenizer: PreTrainedTokenizerBase) -> None:
    text = "Hé llo"
    spans = token_spans(tokenizer, text, add_special_tokens=True)
    encoded = text.encode()
    assert [s.token_id for s in spans] == tokenizer(text)["input_ids"]
    assert "".join(s.text for s in spans) == text
    for span in spans:
        assert encoded[span.start : span.stop].decode() == span.text
    assert spans[-1].stop == len(encoded) == 7


def test_token_spans_truncate_keeps_the_last_tokens(tokenizer: PreTrainedTokenizerBase) -> None:
    spans = token_spans(tokenizer, "one two three", add_special_tokens=True, truncate=2)
    assert [s.text for s in spans] == [" two", " three"]


def test_token_spans_special_tokens_in_text(tokenizer: PreTrainedTokenizerBase) -> None:
    spans = token_spans(tokenizer, "<|im_start|>user", add_special_tokens=False)
    assert (spans[0].token_id, spans[0].text, spans[0].start, spans[0].stop) == (
        1,
        "<|im_start|>",
        0,
        12,
    )
