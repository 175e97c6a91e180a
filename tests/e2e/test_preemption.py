"""When KV blocks run out, the most recently admitted request is preempted and recomputed
later: with a deliberately tiny cache, every request still completes with its greedy output."""

import concurrent.futures
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.server import SluiceServer, metric_samples, running_server
from tests.e2e.test_generate import PROMPTS

CACHE_TOKENS = 96
"""6 blocks of 16 tokens. A request (a prompt of 13-18 tokens and 24 new ones) needs 3 of them,
so any one fits, and the six sent at once need three times the cache."""
MAX_NEW_TOKENS = 24
NUM_REQUESTS = 6


@pytest.fixture(scope="module")
def tiny_cache_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SluiceServer]:
    """float32, where batched and single-request greedy outputs agree."""
    flags = (
        "--dtype", "float32",
        "--max-batch-total-tokens", str(CACHE_TOKENS),
        "--max-batch-prefill-tokens", str(CACHE_TOKENS),
    )  # fmt: skip
    yield from running_server(tmp_path_factory.mktemp("server"), "tiny-cache", flags)


def _greedy(url: str, prompt: str) -> dict[str, Any]:
    body = {
        "inputs": prompt,
        "parameters": {"max_new_tokens": MAX_NEW_TOKENS, "ignore_eos": True, "details": True},
    }
    response = httpx.post(f"{url}/generate", json=body, timeout=300)
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()
    return payload


def _preemptions(url: str) -> float:
    page = httpx.get(f"{url}/metrics").text
    return metric_samples(page, "sluice_preemptions")["sluice_preemptions"]


def test_preempted_requests_complete_with_their_solo_outputs(
    tiny_cache_server: SluiceServer,
) -> None:
    url = tiny_cache_server.url
    prompts = PROMPTS[:NUM_REQUESTS]
    alone = [_greedy(url, prompt) for prompt in prompts]
    assert _preemptions(url) == 0  # one request at a time always fits
    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(lambda prompt: _greedy(url, prompt), prompts))
    assert _preemptions(url) > 0
    for solo, batched in zip(alone, together, strict=True):
        assert batched["details"]["generated_tokens"] == MAX_NEW_TOKENS
        assert batched["generated_text"] == solo["generated_text"]
