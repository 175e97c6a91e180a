"""`sluice serve --num-shard 2` on the default model (9 query heads over 3 KV heads, which TGI
and vLLM refuse to split in two) answers token for token as one shard does, float32; a shard
that dies ends every stream with an error event and the server with a non-zero exit."""

import concurrent.futures
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import (
    SHORT_PROMPTS_FLAGS,
    SluiceServer,
    free_port,
    last_event_after,
    running_server,
    stream_events,
    wait_for_exit,
)
from tests.e2e.test_generate import PROMPTS

SHARDED_FLAGS = ("--num-shard", "2", "--dtype", "float32", *SHORT_PROMPTS_FLAGS)


def _sharded_flags(*extra: str) -> tuple[str, ...]:
    """A master port of its own: the servers of a test run start side by side."""
    return (*SHARDED_FLAGS, "--master-port", str(free_port()), *extra)


NEW_TOKENS = 24


@pytest.fixture(scope="module")
def sharded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SluiceServer]:
    """Two shards, with n-gram drafts and prompt logprobs on: both add rows that every shard
    must compute alike."""
    flags = _sharded_flags("--speculate", "2", "--enable-prefill-logprobs")
    yield from running_server(tmp_path_factory.mktemp("sharded"), "sharded", flags)


def _greedy(server: SluiceServer, prompt: str, **parameters: object) -> dict:
    body = {
        "inputs": prompt,
        "parameters": {"max_new_tokens": NEW_TOKENS, "details": True, **parameters},
    }
    response = httpx.post(f"{server.url}/generate", json=body, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


def _token_ids(answer: dict) -> list[int]:
    return [token["id"] for token in answer["details"]["tokens"]]


def test_two_shards_answer_token_for_token_as_one(
    sharded_server: SluiceServer, fp32_server: SluiceServer
) -> None:
    prompts = PROMPTS[:6]
    expected = [_token_ids(_greedy(fp32_server, prompt)) for prompt in prompts]
    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:  # batched by the engine
        answers = list(pool.map(lambda prompt: _greedy(sharded_server, prompt), prompts))
    assert [_token_ids(answer) for answer in answers] == expected


def test_two_shards_stream_and_report_prompt_logprobs(sharded_server: SluiceServer) -> None:
    with httpx.Client() as client:
        events = stream_events(
            client,
            sharded_server.url,
            {"inputs": PROMPTS[6], "parameters": {"max_new_tokens": 8, "details": True}},
        )
    assert len(events) == 8 and events[-1]["details"]["finish_reason"] == "length"
    answer = _greedy(sharded_server, PROMPTS[7], decoder_input_details=True)
    prefill = answer["details"]["prefill"]
    assert len(prefill) > 10 and all(t["logprob"] is None or t["logprob"] <= 0 for t in prefill)


def test_two_shards_follow_a_grammar(sharded_server: SluiceServer) -> None:
    grammar = {"type": "regex", "value": "[0-9]{2,4}"}
    answer = _greedy(sharded_server, PROMPTS[5], grammar=grammar)
    assert answer["generated_text"].isdigit()


def test_compute_type_and_info_report_the_shards(sharded_server: SluiceServer) -> None:
    response = httpx.post(
        f"{sharded_server.url}/generate",
        json={"inputs": PROMPTS[0], "parameters": {"max_new_tokens": 1}},
        timeout=60,
    )
    assert response.headers["x-compute-type"] == "2-cpu"
    assert httpx.get(f"{sharded_server.url}/info", timeout=10).json()["num_shard"] == 2


def test_torchrun_starts_a_sharded_server(tmp_path: Path, fp32_server: SluiceServer) -> None:
    """Each torchrun process is a shard (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), rank 0
    serving HTTP; torchrun's own store is the meeting point."""
    torchrun = (str(Path(sys.executable).parent / "torchrun"), "--standalone")
    command = (*torchrun, "--nproc-per-node", "2", "-m", "sluice")
    flags = ("--dtype", "float32", *SHORT_PROMPTS_FLAGS)
    for server in running_server(tmp_path, "torchrun", flags, command):
        assert _token_ids(_greedy(server, PROMPTS[8])) == _token_ids(
            _greedy(fp32_server, PROMPTS[8])
        )
        assert httpx.get(f"{server.url}/info", timeout=10).json()["num_shard"] == 2


def test_a_dead_shard_ends_streams_with_an_error_and_the_server_exits(
    sharded_server: SluiceServer,
) -> None:
    """Last in this module: it ends the module's sharded server."""
    _, shard = sharded_server.spawned_pids()
    last = last_event_after(sharded_server.url, lambda: os.kill(shard, signal.SIGKILL))
    assert last["error_type"] == "generation"
    with contextlib.suppress(httpx.TransportError):  # unless it has exited already
        assert httpx.get(f"{sharded_server.url}/health", timeout=2).status_code == 503
    assert wait_for_exit(sharded_server.process, 60) not in (None, 0)
    assert "shard 1 exited" in sharded_server.log_path.read_text()
