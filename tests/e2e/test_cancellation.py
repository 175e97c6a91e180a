"""A client that goes away has its request aborted at the next step and its KV blocks freed,
streamed or not; each of its generations counts as a `dropped` failure, as in TGI."""

import time
from typing import Any

import httpx
import pytest

from tests.e2e.server import SluiceServer, metric_samples
from tests.e2e.test_generate import PROMPTS

LONG = {"max_new_tokens": 2000, "ignore_eos": True}
"""Far more tokens than a client waits for."""
LONG_CHAT = {
    "messages": [{"role": "user", "content": "Sing a long song."}],
    "max_tokens": 2000,
    # Chat has no ignore_eos: a grammar that cannot end early keeps the answer going.
    "response_format": {"type": "regex", "value": "(la ){3000}"},
}
DROPPED = 'tgi_request_failure{err="dropped"}'


def _metric(server: SluiceServer, sample: str) -> float:
    page = httpx.get(f"{server.url}/metrics").text
    return metric_samples(page, sample.split("{")[0]).get(sample, 0.0)


def _kv_blocks_after_a_step(server: SluiceServer) -> float:
    """The gauge is refreshed by each engine step: run a one-token request, then read it."""
    tiny = {"inputs": "Hi", "parameters": {"max_new_tokens": 1}}
    httpx.post(f"{server.url}/generate", json=tiny, timeout=60)
    return _metric(server, "sluice_kv_cache_blocks_used")


def _wait_for_blocks_in_use(server: SluiceServer, expected: float) -> None:
    deadline = time.monotonic() + 60
    while _kv_blocks_after_a_step(server) != expected:
        assert time.monotonic() < deadline, "the abandoned request kept its KV blocks"
        time.sleep(0.1)


def test_disconnected_stream_frees_its_blocks(server: SluiceServer) -> None:
    start = _kv_blocks_after_a_step(server)
    dropped = _metric(server, DROPPED)
    body = {"inputs": PROMPTS[6], "parameters": LONG}
    with (
        httpx.Client(timeout=60) as client,
        client.stream("POST", f"{server.url}/generate_stream", json=body) as response,
    ):
        lines = response.iter_lines()
        for _ in range(5):  # a few tokens arrive, then the client hangs up
            next(line for line in lines if line.startswith("data:"))
        assert _metric(server, "sluice_kv_cache_blocks_used") > start
    _wait_for_blocks_in_use(server, start)
    assert _metric(server, DROPPED) == dropped + 1


@pytest.mark.parametrize(
    ("route", "body", "num_generations"),
    [
        ("/generate", {"inputs": PROMPTS[6], "parameters": LONG}, 1),
        (
            "/generate",
            {"inputs": PROMPTS[6], "parameters": {**LONG, "best_of": 2, "do_sample": True}},
            2,
        ),
        ("/", {"inputs": PROMPTS[6], "parameters": LONG, "stream": False}, 1),
        ("/v1/chat/completions", LONG_CHAT, 1),
    ],
    ids=["generate", "generate-best-of", "compat", "chat"],
)
def test_disconnected_client_of_a_whole_reply_frees_its_blocks(
    server: SluiceServer, route: str, body: dict[str, Any], num_generations: int
) -> None:
    start = _kv_blocks_after_a_step(server)
    dropped = _metric(server, DROPPED)
    # The client gives up while the reply is still being generated.
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}{route}", json=body, timeout=httpx.Timeout(60, read=2))
    _wait_for_blocks_in_use(server, start)
    assert _metric(server, DROPPED) == dropped + num_generations
