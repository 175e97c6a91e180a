"""IncrementalDetokenizer on the default model's tokenizer: token texts add up to the decoded
text, split characters wait for their last byte, special tokens stay out of the text."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import PreTrainedTokenizerBase

from sluice.frontend.detokenizer import DecodedToken, IncrementalDetokenizer

IM_END = 2
GRINNING = "\U0001f600"  # 4 UTF-8 bytes, 3 tokens in this vocabulary

_pieces = st.one_of(
    st.characters(codec="utf-8"),
    st.sampled_from([" ", "  ", "\n", "\n\n", "\t", " the", "ing", "123"]),
    st.sampled_from(list("éàüñçØßœ")),
    st.sampled_from(list("中文字日本語한국어")),
    st.sampled_from(
        [GRINNING, "\U0001f389", "\U0001f44d\U0001f3fd", "\u2764\ufe0f", "\U0001f1eb\U0001f1f7"]
    ),
)
_texts = st.lists(_pieces, min_size=1, max_size=20).map("".join)
_settings = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _feed(detokenizer: IncrementalDetokenizer, ids: list[int]) -> list[DecodedToken]:
    return [detokenizer.add(i, is_last=n == len(ids) - 1) for n, i in enumerate(ids)]


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


@_settings
@given(prompt=st.one_of(st.just(""), _texts), output=_texts)
def test_detokenizer_token_texts_concatenate_to_the_decoded_text(
    tokenizer: PreTrainedTokenizerBase, prompt: str, output: str
) -> None:
    ids = _encode(tokenizer, output)
    detokenizer = IncrementalDetokenizer(tokenizer, _encode(tokenizer, prompt))

    decoded = _feed(detokenizer, ids)

    expected = tokenizer.decode(ids, skip_special_tokens=True)
    assert "".join(d.text for d in decoded) == detokenizer.text == expected
    assert not any(d.is_special for d in decoded)


@pytest.mark.parametrize(
    "text",
    [
        " Hello world",
        "  two leading spaces",
        "line one\n\nline two\n",
        "déjà vu, naïve café",
        "中文字 and 日本語",
        f"smile {GRINNING}{GRINNING} twice",
        "1234567890",
        "\t\ttabs",
    ],
)
def test_detokenizer_round_trips_text_after_a_prompt(
    tokenizer: PreTrainedTokenizerBase, text: str
) -> None:
    detokenizer = IncrementalDetokenizer(tokenizer, _encode(tokenizer, "The answer is:"))

    decoded = _feed(detokenizer, _encode(tokenizer, text))

    assert "".join(d.text for d in decoded) == detokenizer.text == text


def test_detokenizer_first_token_keeps_its_leading_space(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    ids = _encode(tokenizer, "Hello world")
    detokenizer = IncrementalDetokenizer(tokenizer, ids[:-1])

    assert detokenizer.add(ids[-1]) == DecodedToken(" world", is_special=False)


def test_detokenizer_holds_back_a_split_character_until_its_last_byte(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    ids = _encode(tokenizer, f"a{GRINNING}b")
    emoji_ids = _encode(tokenizer, GRINNING)
    assert len(emoji_ids) > 1 and tokenizer.decode(emoji_ids[:1]).endswith("\ufffd")
    detokenizer = IncrementalDetokenizer(tokenizer, [])

    texts = [d.text for d in _feed(detokenizer, ids)]

    assert texts == ["a"] + [""] * (len(emoji_ids) - 1) + [GRINNING, "b"]


def test_detokenizer_is_last_flushes_an_incomplete_character(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    ids = _encode(tokenizer, f"ok{GRINNING}")[:-1]  # generation stopped mid-character
    detokenizer = IncrementalDetokenizer(tokenizer, [])

    decoded = _feed(detokenizer, ids)

    assert decoded[-1].text.endswith("\ufffd")
    assert detokenizer.text == tokenizer.decode(ids, skip_special_tokens=True)


def test_detokenizer_special_token_has_literal_text_and_stays_out_of_the_text(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    detokenizer = IncrementalDetokenizer(tokenizer, [])
    hello, world = _encode(tokenizer, "Hello"), _encode(tokenizer, " world")

    decoded = _feed(detokenizer, hello) + [detokenizer.add(IM_END)] + _feed(detokenizer, world)

    assert decoded[len(hello)] == DecodedToken("<|im_end|>", is_special=True)
    assert detokenizer.text == "Hello world"
    assert "".join(d.text for d in decoded if not d.is_special) == "Hello world"


def test_detokenizer_final_special_token_ends_the_text(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    detokenizer = IncrementalDetokenizer(tokenizer, _encode(tokenizer, "Q:"))

    decoded = _feed(detokenizer, _encode(tokenizer, " yes") + [IM_END])

    assert decoded[-1] == DecodedToken("<|im_end|>", is_special=True)
    assert detokenizer.text == " yes"


def test_detokenizer_flushes_held_back_text_when_the_last_token_is_special(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    ids = _encode(tokenizer, f"ok{GRINNING}")[:-1]
    detokenizer = IncrementalDetokenizer(tokenizer, [])

    _feed(detokenizer, [*ids, IM_END])

    assert detokenizer.text == tokenizer.decode(ids, skip_special_tokens=True)  # "ok\ufffd"


def test_detokenizer_treats_every_special_vocabulary_token_as_special(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    repo_name = tokenizer.convert_tokens_to_ids("<repo_name>")
    ids = [*_encode(tokenizer, "Hi"), repo_name, *_encode(tokenizer, " there")]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Hi there"
    detokenizer = IncrementalDetokenizer(tokenizer, [])

    decoded = _feed(detokenizer, ids)

    assert decoded[1].is_special
    assert detokenizer.text == "Hi there"
