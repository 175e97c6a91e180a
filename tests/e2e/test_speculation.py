"""`--speculate 4`: a float32 server that verifies n-gram drafts answers, token for token, what
the server without speculation answers, over /generate and /generate_stream, and its metrics
count the drafts it accepted. With `--speculator-model-id` naming the served model itself, a
bfloat16 server gets every draft it makes accepted and answers what the default server
answers."""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sluice.weights.sources import resolve_model
from tests.e2e.server import (
    SHORT_PROMPTS_FLAGS,
    SluiceServer,
    metric_samples,
    running_server,
    stream_events,
)

PATTERN_PROMPT = (
    "<|im_start|>user\nContinue the pattern.<|im_end|>\n<|im_start|>assistant\n"
    + "red blue green " * 4
)
FREE_PROMPT = "<|im_start|>user\nWrite a haiku about rivers.<|im_end|>\n<|im_start|>assistant\n"
PARAMETERS = {"max_new_tokens": 40, "ignore_eos": True, "details": True}


@pytest.fixture(scope="module")
def speculating_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SluiceServer]:
    flags = ("--dtype", "float32", "--speculate", "4", *SHORT_PROMPTS_FLAGS)
    yield from running_server(tmp_path_factory.mktemp("server"), "speculate", flags)


@pytest.fixture(scope="module")
def model_drafting_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SluiceServer]:
    model = str(resolve_model().path)
    flags = ("--speculate", "3", "--speculator-model-id", model, *SHORT_PROMPTS_FLAGS)
    yield from running_server(tmp_path_factory.mktemp("server"), "speculator", flags)


def _generate(server: SluiceServer, prompt: str) -> dict[str, Any]:
    body = {"inputs": prompt, "parameters": PARAMETERS}
    response = httpx.post(f"{server.url}/generate", json=body, timeout=300)
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()
    return payload


def _metric(server: SluiceServer, name: str) -> float:
    return metric_samples(httpx.get(f"{server.url}/metrics").text, name)[name]


@pytest.mark.parametrize("prompt", [PATTERN_PROMPT, FREE_PROMPT], ids=["pattern", "free"])
def test_speculation_answers_what_the_server_without_it_answers(
    speculating_server: SluiceServer, fp32_server: SluiceServer, prompt: str
) -> None:
    expected = _generate(fp32_server, prompt)

    answered = _generate(speculating_server, prompt)

    assert answered["generated_text"] == expected["generated_text"]
    tokens = [token["id"] for token in answered["details"]["tokens"]]
    assert tokens == [token["id"] for token in expected["details"]["tokens"]]
    assert answered["details"]["generated_tokens"] == PARAMETERS["max_new_tokens"]


def test_speculation_streams_one_event_per_token_and_counts_accepted_drafts(
    speculating_server: SluiceServer, fp32_server: SluiceServer
) -> None:
    accepted_before = _metric(speculating_server, "sluice_speculative_accepted_tokens")
    body = {"inputs": PATTERN_PROMPT, "parameters": PARAMETERS}

    with httpx.Client() as client:
        events = stream_events(client, speculating_server.url, body)

    expected = _generate(fp32_server, PATTERN_PROMPT)
    assert [e["token"]["id"] for e in events] == [t["id"] for t in expected["details"]["tokens"]]
    assert [e["index"] for e in events] == list(range(1, PARAMETERS["max_new_tokens"] + 1))
    accepted = _metric(speculating_server, "sluice_speculative_accepted_tokens") - accepted_before
    assert accepted >= PARAMETERS["max_new_tokens"] // 2
    assert _metric(speculating_server, "tgi_request_skipped_tokens_count") > 0


def test_a_speculator_model_drafts_what_the_model_says_and_every_draft_is_accepted(
    model_drafting_server: SluiceServer, server: SluiceServer
) -> None:
    drafted_before = _metric(model_drafting_server, "sluice_speculative_draft_tokens")
    accepted_before = _metric(model_drafting_server, "sluice_speculative_accepted_tokens")

    for prompt in (PATTERN_PROMPT, FREE_PROMPT):
        answered = _generate(model_drafting_server, prompt)

        expected = _generate(server, prompt)
        tokens = [token["id"] for token in answered["details"]["tokens"]]
        assert tokens == [token["id"] for token in expected["details"]["tokens"]]
    drafted = _metric(model_drafting_server, "sluice_speculative_draft_tokens") - drafted_before
    accepted = _metric(model_drafting_server, "sluice_speculative_accepted_tokens")
    # Its first drafts come before their cost is measured; once it is, drafting stops where
    # it would not pay, and a model drafting for itself costs as much as it saves.
    assert drafted > 0
    assert accepted - accepted_before == drafted
