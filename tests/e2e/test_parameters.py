"""Generation parameters end to end (bf16 server): repetition and frequency penalties,
typical_p, top_n_tokens, decoder_input_details, watermark, and seeds with all of them."""

import math
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase

from sluice.weights import resolve_model
from tests.e2e.server import SluiceServer, stream_events

CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
WATERMARK_HASH_KEY = 15485863


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return resolve_model().path


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def vocab_size(model_dir: Path) -> int:
    return int(AutoConfig.from_pretrained(model_dir).vocab_size)


def _generate(server: SluiceServer, inputs: str, **parameters: Any) -> dict[str, Any]:
    body = {"inputs": inputs, "parameters": {"details": True, **parameters}}
    response = httpx.post(f"{server.url}/generate", json=body, timeout=120)
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()
    return payload


def _token_ids(payload: dict[str, Any]) -> list[int]:
    return [token["id"] for token in payload["details"]["tokens"]]


def test_repetition_penalty_covers_prompt_and_output_tokens(
    server: SluiceServer, tokenizer: PreTrainedTokenizerBase
) -> None:
    # A prompt whose first answer token is among its own tokens ("Repeat") in the top 5, in
    # float32 and in bfloat16 alike.
    inputs = CHAT.format("Repeat after me: The cat sat on the mat, the cat sat on the mat.")
    prompt_ids = set(tokenizer(inputs)["input_ids"])

    plain = _token_ids(_generate(server, inputs, max_new_tokens=24))
    penalised = _token_ids(_generate(server, inputs, max_new_tokens=24, repetition_penalty=50.0))

    assert prompt_ids & set(plain)  # unpenalised, the answer repeats the prompt's words
    assert not prompt_ids & set(penalised)  # the prompt's tokens are penalised
    assert len(set(penalised)) == len(penalised) == 24  # and so is every output token


def test_frequency_penalty_subtracts_length_normalised_prompt_counts(
    server: SluiceServer, tokenizer: PreTrainedTokenizerBase
) -> None:
    # A prompt whose first answer token is among its own tokens ("Repeat") in the top 5, in
    # float32 and in bfloat16 alike.
    inputs = CHAT.format("Repeat after me: The cat sat on the mat, the cat sat on the mat.")
    prompt_ids = tokenizer(inputs)["input_ids"]
    penalty = 2.0

    plain = _first_top_logprobs(server, inputs)
    penalised = _first_top_logprobs(server, inputs, frequency_penalty=penalty)

    # Between two tokens, the normaliser cancels: shifts differ by penalty x counts / length.
    common = sorted(set(plain) & set(penalised))
    assert len(common) >= 2 and any(prompt_ids.count(t) for t in common), (plain, penalised)
    shift = {t: penalised[t] - plain[t] for t in common}
    base = common[0]
    for token in common[1:]:
        expected = -penalty * (prompt_ids.count(token) - prompt_ids.count(base)) / len(prompt_ids)
        assert shift[token] - shift[base] == pytest.approx(expected, abs=1e-3)


def test_tiny_typical_p_keeps_one_token_whatever_the_seed(server: SluiceServer) -> None:
    inputs = CHAT.format("Write a short poem about the sea.")

    runs = [_generate(server, inputs, max_new_tokens=12, typical_p=0.001, seed=s) for s in (1, 2)]

    # Only the most typical token survives, with the tokens tied with it exactly (bf16 logits
    # tie often): each choice had probability 1/k among k survivors, never anything else.
    for run in runs:
        for token in run["details"]["tokens"]:
            survivors = math.exp(-token["logprob"])
            assert survivors == pytest.approx(round(survivors), rel=1e-3)
            assert round(survivors) <= 16  # a few exact ties, not a spread of mass
    assert runs[0]["details"]["seed"] == 1  # typical_p is a warper: the request sampled


def test_top_n_tokens_in_details_and_stream(server: SluiceServer) -> None:
    inputs = CHAT.format("What is the capital of France?")

    payload = _generate(server, inputs, max_new_tokens=8, top_n_tokens=3)
    details = payload["details"]
    plain = _generate(server, inputs, max_new_tokens=8)["details"]
    events = _stream(server, inputs, max_new_tokens=8, top_n_tokens=3)
    plain_events = _stream(server, inputs, max_new_tokens=8)

    assert len(details["top_tokens"]) == len(details["tokens"])
    for token, top in zip(details["tokens"], details["top_tokens"], strict=True):
        assert len(top) >= 3  # more only when tied with the third
        assert set(top[0]) == {"id", "text", "logprob", "special"}
        assert top[0]["id"] == token["id"]  # greedy: the chosen token is the best one
        assert top[0]["logprob"] == pytest.approx(token["logprob"], abs=1e-6)
        logprobs = [t["logprob"] for t in top]
        assert logprobs == sorted(logprobs, reverse=True) and logprobs[-1] <= 0
    assert "top_tokens" not in plain
    assert [e["top_tokens"] for e in events] == details["top_tokens"]
    assert all("top_tokens" not in e for e in plain_events)


def test_top_n_tokens_above_the_limit_is_rejected(server: SluiceServer) -> None:
    body = {"inputs": "hi", "parameters": {"top_n_tokens": 6}}
    response = httpx.post(f"{server.url}/generate", json=body, timeout=60)

    assert response.status_code == 422
    assert response.json()["error"] == (
        "Input validation error: `top_n_tokens` must be >= 0 and <= 5. Given: 6"
    )


def test_decoder_input_details_is_empty_without_the_server_flag(server: SluiceServer) -> None:
    payload = _generate(server, "Hello there", max_new_tokens=2, decoder_input_details=True)

    assert payload["details"]["prefill"] == []


def test_decoder_input_details_lists_prompt_tokens_with_logprobs(
    options_server: SluiceServer, tokenizer: PreTrainedTokenizerBase
) -> None:
    inputs = CHAT.format("Name a colour.")
    body = {"inputs": inputs, "parameters": {"max_new_tokens": 3, "decoder_input_details": True}}

    payload = httpx.post(f"{options_server.url}/generate", json=body, timeout=60).json()
    plain = _generate(options_server, inputs, max_new_tokens=3)

    prefill = payload["details"]["prefill"]
    assert [t["id"] for t in prefill] == tokenizer(inputs)["input_ids"]
    assert "".join(t["text"] for t in prefill) == inputs
    assert prefill[0]["logprob"] is None
    assert all(t["logprob"] <= 0 for t in prefill[1:])
    assert set(prefill[0]) == {"id", "text", "logprob"}
    # "<|im_start|>" is always followed by a role: the template's predictable tokens score high.
    assert max(t["logprob"] for t in prefill[1:]) > -0.5
    assert payload["generated_text"] == plain["generated_text"]
    assert plain["details"]["prefill"] == []


def test_watermark_adds_delta_to_tgi_green_list(
    fp32_server: SluiceServer, tokenizer: PreTrainedTokenizerBase, vocab_size: int
) -> None:
    """float32: the second request finds the prompt in the prefix cache and computes only its
    tail, whose bfloat16 logits may differ from a full prefill's by a rounding step."""
    inputs = CHAT.format("Tell me a story about a dragon who loves to bake bread.")
    green = _green_list(tokenizer(inputs)["input_ids"][-1], vocab_size)

    plain = _first_top_logprobs(fp32_server, inputs)
    marked = _first_top_logprobs(fp32_server, inputs, watermark=True)

    # Between two tokens, the normaliser cancels: shifts differ by delta (2.0) or not at all.
    common = sorted(set(plain) & set(marked))
    assert len(common) >= 2 and len({t in green for t in common}) == 2, (plain, marked, green)
    base = common[0]
    for token in common[1:]:
        expected = 2.0 * ((token in green) - (base in green))
        difference = (marked[token] - plain[token]) - (marked[base] - plain[base])
        assert difference == pytest.approx(expected, abs=1e-3)


def test_watermarked_sample_is_mostly_green(
    server: SluiceServer, tokenizer: PreTrainedTokenizerBase, vocab_size: int
) -> None:
    inputs = CHAT.format("Tell me a story about a dragon who loves to bake bread.")
    parameters = {"max_new_tokens": 48, "do_sample": True, "seed": 5}

    marked = _generate(server, inputs, watermark=True, **parameters)
    plain = _generate(server, inputs, **parameters)

    last_prompt_id = tokenizer(inputs)["input_ids"][-1]
    marked_share = _green_share(last_prompt_id, _token_ids(marked), vocab_size)
    plain_share = _green_share(last_prompt_id, _token_ids(plain), vocab_size)
    assert marked_share > 0.6 > plain_share, (marked_share, plain_share)


def test_seed_reproduces_a_request_using_every_parameter(server: SluiceServer) -> None:
    inputs = CHAT.format("Invent a name for a river.")
    parameters = {
        "max_new_tokens": 16,
        "seed": 1234,
        "temperature": 0.9,
        "top_k": 40,
        "typical_p": 0.95,
        "repetition_penalty": 1.3,
        "frequency_penalty": 0.5,
        "watermark": True,
        "top_n_tokens": 2,
    }

    first, second = (_generate(server, inputs, **parameters) for _ in range(2))

    assert first == second
    assert first["details"]["seed"] == 1234


def _stream(server: SluiceServer, inputs: str, **parameters: Any) -> list[dict[str, Any]]:
    body = {"inputs": inputs, "parameters": parameters}
    with httpx.Client() as client:
        return stream_events(client, server.url, body)


def _first_top_logprobs(server: SluiceServer, inputs: str, **parameters: Any) -> dict[int, float]:
    """{token id: logprob} of the 5 best first tokens, under the processed distribution."""
    payload = _generate(server, inputs, max_new_tokens=1, top_n_tokens=5, **parameters)
    return {t["id"]: t["logprob"] for t in payload["details"]["top_tokens"][0]}


def _green_list(previous: int, vocab_size: int) -> set[int]:
    """TGI's green list after `previous` (the server runs on CPU: a CPU generator draws the
    same permutation)."""
    generator = torch.Generator().manual_seed(WATERMARK_HASH_KEY * previous)
    permutation = torch.randperm(vocab_size, generator=generator)
    return set(permutation[: int(vocab_size * 0.5)].tolist())


def _green_share(last_prompt_id: int, token_ids: list[int], vocab_size: int) -> float:
    sequence = [last_prompt_id, *token_ids]
    pairs = list(zip(sequence[:-1], sequence[1:], strict=True))
    return sum(token in _green_list(previous, vocab_size) for previous, token in pairs) / len(pairs)
