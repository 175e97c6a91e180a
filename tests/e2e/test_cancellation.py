"""A client that goes away has its request aborted at the next step and its KV blocks freed."""

import time

import httpx

from tests.e2e.server import SluiceServer, metric_samples
from tests.e2e.test_generate import PROMPTS


def _kv_tokens_in_use(server: SluiceServer) -> float:
    page = httpx.get(f"{server.url}/metrics").text
    return metric_samples(page, "tgi_batch_current_max_tokens")["tgi_batch_current_max_tokens"]


def _kv_tokens_after_a_step(server: SluiceServer) -> float:
    """The metric is refreshed by each engine step: run a one-token request, then read it."""
    tiny = {"inputs": "Hi", "parameters": {"max_new_tokens": 1}}
    httpx.post(f"{server.url}/generate", json=tiny, timeout=60)
    return _kv_tokens_in_use(server)


def test_disconnected_stream_frees_its_blocks(server: SluiceServer) -> None:
    body = {"inputs": PROMPTS[6], "parameters": {"max_new_tokens": 2000, "ignore_eos": True}}
    with (
        httpx.Client(timeout=60) as client,
        client.stream("POST", f"{server.url}/generate_stream", json=body) as response,
    ):
        lines = response.iter_lines()
        for _ in range(5):  # a few tokens arrive, then the client hangs up
            next(line for line in lines if line.startswith("data:"))
        assert _kv_tokens_in_use(server) > 0
    deadline = time.monotonic() + 60
    while _kv_tokens_after_a_step(server) != 0:
        assert time.monotonic() < deadline, "the abandoned request kept its KV blocks"
        time.sleep(0.1)
