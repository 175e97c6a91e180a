"""A request whose generation fails mid-stream ends with an SSE error event; the requests
batched with it carry on unharmed, also when the model is sharded (the retry runs on every
shard in step)."""

import concurrent.futures
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e import faulty_server
from tests.e2e.server import (
    SHORT_PROMPTS_FLAGS,
    SluiceServer,
    free_port,
    running_server,
    stream_events,
)
from tests.e2e.test_generate import PROMPTS

FAULTY_COMMAND = (sys.executable, str(Path(faulty_server.__file__)))


@pytest.fixture(scope="module", params=[1, 2], ids=lambda n: f"{n}-shards")
def faulty(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SluiceServer]:
    flags = ("--dtype", "float32", *SHORT_PROMPTS_FLAGS)
    if request.param > 1:
        flags += ("--num-shard", str(request.param), "--master-port", str(free_port()))
    yield from running_server(tmp_path_factory.mktemp("faulty"), "faulty", flags, FAULTY_COMMAND)


def _greedy_body(prompt: str) -> dict[str, object]:
    return {"inputs": prompt, "parameters": {"max_new_tokens": 20}}


def _doomed_body() -> dict[str, object]:
    params = {"max_new_tokens": 20, "do_sample": True, "seed": faulty_server.FAULT_SEED}
    return {"inputs": PROMPTS[0], "parameters": params}


def test_failure_mid_stream_ends_with_error_event_and_spares_the_batch(
    faulty: SluiceServer,
) -> None:
    alone = [
        httpx.post(f"{faulty.url}/generate", json=_greedy_body(p), timeout=120).json()
        for p in PROMPTS[1:5]
    ]
    with concurrent.futures.ThreadPoolExecutor(5) as pool, httpx.Client() as client:
        doomed = pool.submit(stream_events, client, faulty.url, _doomed_body())
        others = [
            pool.submit(stream_events, client, faulty.url, _greedy_body(p)) for p in PROMPTS[1:5]
        ]
        doomed_events = doomed.result()
        other_events = [future.result() for future in others]
    assert len(doomed_events) > faulty_server.FAULT_AFTER_TOKENS
    assert all("token" in event for event in doomed_events[:-1])
    error = doomed_events[-1]
    assert error["error_type"] == "generation"
    assert error["error"].startswith("Request failed during generation: ")
    assert "injected failure" in error["error"]
    assert [events[-1]["generated_text"] for events in other_events] == [
        a["generated_text"] for a in alone
    ]


def test_failure_without_streaming_is_a_424(faulty: SluiceServer) -> None:
    response = httpx.post(f"{faulty.url}/generate", json=_doomed_body(), timeout=120)
    assert response.status_code == 424
    assert response.json()["error_type"] == "generation"
    assert httpx.get(f"{faulty.url}/health").status_code == 200
