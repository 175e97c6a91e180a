"""best_of: independent sampled generations, the best by mean token logprob returned."""

import httpx
import pytest

from tests.e2e.server import SluiceServer, stream_events
from tests.e2e.test_generate import PROMPTS


def _mean_logprob(tokens: list[dict[str, float]]) -> float:
    return sum(t["logprob"] for t in tokens) / len(tokens)


def test_best_of_returns_the_most_likely_sequence(server: SluiceServer) -> None:
    params = {"max_new_tokens": 12, "do_sample": True, "best_of": 2, "details": True}
    response = httpx.post(
        f"{server.url}/generate", json={"inputs": PROMPTS[2], "parameters": params}, timeout=120
    )
    assert response.status_code == 200
    details = response.json()["details"]
    (other,) = details["best_of_sequences"]
    assert set(other) >= {"generated_text", "finish_reason", "generated_tokens", "seed", "tokens"}
    assert other["seed"] != details["seed"]
    assert _mean_logprob(details["tokens"]) >= _mean_logprob(other["tokens"])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"best_of": 2}, "you must use sampling when `best_of` is > 1"),
        ({"best_of": 2, "do_sample": True, "seed": 1}, "`seed` must not be set when `best_of` > 1"),
        ({"best_of": 3, "do_sample": True}, "`best_of` must be > 0 and <= 2. Given: 3"),
    ],
)
def test_best_of_rules(server: SluiceServer, params: dict[str, object], message: str) -> None:
    body = {"inputs": "Hi", "parameters": {"max_new_tokens": 2, **params}}
    response = httpx.post(f"{server.url}/generate", json=body, timeout=60)
    assert response.status_code == 422
    assert response.json()["error"] == f"Input validation error: {message}"


def test_best_of_is_refused_when_streaming(server: SluiceServer) -> None:
    body = {"inputs": "Hi", "parameters": {"best_of": 2, "do_sample": True}}
    with httpx.Client() as client:
        events = stream_events(client, server.url, body)
    assert events == [
        {
            "error": "Input validation error: "
            "`best_of` != 1 is not supported when streaming tokens",
            "error_type": "validation",
        }
    ]
