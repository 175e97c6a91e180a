"""Graceful stop (api/shutdown.py): after SIGTERM the server refuses new work with 503 and fails
its health check, lets every accepted request finish and deliver its last event, and exits 0;
past `--graceful-termination-timeout` the requests still running end with an error saying so;
a second signal stops it at once. On one shard and on two."""

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import SHORT_PROMPTS_FLAGS, SluiceServer, running_server, wait_for_exit

SHUTTING_DOWN = {"error": "The server is shutting down", "error_type": "unhealthy"}


def _body(max_new_tokens: int) -> dict[str, Any]:
    return {
        "inputs": "Count to a thousand.",
        "parameters": {"max_new_tokens": max_new_tokens, "ignore_eos": True, "details": True},
    }


class _Stream(threading.Thread):
    """A /generate_stream request read to its end in the background; `started` is set at its
    first event."""

    def __init__(self, url: str, max_new_tokens: int) -> None:
        super().__init__(daemon=True)
        self.url, self.body = url, _body(max_new_tokens)
        self.started = threading.Event()
        self.events: list[dict[str, Any]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.stream(
                "POST", f"{self.url}/generate_stream", json=self.body, timeout=120
            ) as response:
                assert response.status_code == 200
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        self.events.append(json.loads(line.removeprefix("data:")))
                        self.started.set()
        except BaseException as error:  # reported by the test
            self.error = error
            self.started.set()


class _Call(threading.Thread):
    """A non-streamed /generate request in the background."""

    def __init__(self, url: str, max_new_tokens: int) -> None:
        super().__init__(daemon=True)
        self.url, self.body = url, _body(max_new_tokens)
        self.response: httpx.Response | None = None

    def run(self) -> None:
        self.response = httpx.post(f"{self.url}/generate", json=self.body, timeout=120)


def _server(tmp_path: Path, *flags: str) -> contextlib.AbstractContextManager[SluiceServer]:
    return contextlib.contextmanager(running_server)(
        tmp_path, "server", (*SHORT_PROMPTS_FLAGS, *flags)
    )


def _in_flight(
    server: SluiceServer, streams: int, calls: int, tokens: int
) -> tuple[list[_Stream], list[_Call]]:
    """Requests under way: every stream has its first token (the calls started before)."""
    started_calls = [_Call(server.url, tokens) for _ in range(calls)]
    started_streams = [_Stream(server.url, tokens) for _ in range(streams)]
    for request in [*started_calls, *started_streams]:
        request.start()
    for stream in started_streams:
        assert stream.started.wait(timeout=60), "no first token"
        assert stream.error is None, stream.error
    return started_streams, started_calls


def _signal(server: SluiceServer) -> Callable[[], None]:
    return lambda: os.kill(server.process.pid, signal.SIGTERM)


@pytest.mark.parametrize("shards", [1, 2])
def test_sigterm_lets_accepted_requests_finish_and_refuses_new_ones(
    tmp_path: Path, shards: int
) -> None:
    flags = ("--num-shard", "2", "--dtype", "float32") if shards == 2 else ()
    with _server(tmp_path, *flags) as server:
        streams, calls = _in_flight(server, streams=3, calls=2, tokens=60)

        _signal(server)()
        time.sleep(0.5)  # the signal lands between two bytecodes of the server's loop
        health = httpx.get(f"{server.url}/health", timeout=10)
        refused = httpx.post(f"{server.url}/generate", json=_body(5), timeout=10)

        assert (health.status_code, health.json()) == (503, SHUTTING_DOWN)
        assert (refused.status_code, refused.json()) == (503, SHUTTING_DOWN)
        for request in [*streams, *calls]:
            request.join(timeout=120)
        for stream in streams:
            assert stream.error is None, stream.error
            assert stream.events[-1]["details"]["finish_reason"] == "length"
            assert stream.events[-1]["details"]["generated_tokens"] == 60
        for call in calls:
            assert call.response is not None and call.response.status_code == 200
            assert call.response.json()["details"]["generated_tokens"] == 60
        assert wait_for_exit(server.process, timeout_s=30) == 0
        assert "drained: every request finished" in (tmp_path / "server.log").read_text()


def test_requests_past_the_timeout_end_with_an_error_saying_so(tmp_path: Path) -> None:
    with _server(tmp_path, "--graceful-termination-timeout", "1") as server:
        streams, calls = _in_flight(server, streams=1, calls=1, tokens=240)
        stopped_at = time.monotonic()

        _signal(server)()
        for request in [*streams, *calls]:
            request.join(timeout=60)

        (stream,) = streams
        assert stream.error is None, stream.error
        assert stream.events[-1] == SHUTTING_DOWN  # an error event, not a cut
        assert stream.events[-2]["details"] is None  # the stream had not finished
        (call,) = calls
        assert call.response is not None
        assert (call.response.status_code, call.response.json()) == (503, SHUTTING_DOWN)
        assert wait_for_exit(server.process, timeout_s=30) == 0
        assert time.monotonic() - stopped_at < 20


def test_a_second_signal_stops_at_once(tmp_path: Path) -> None:
    with _server(tmp_path) as server:
        (stream,), _ = _in_flight(server, streams=1, calls=0, tokens=400)
        _signal(server)()
        time.sleep(1)
        assert server.process.poll() is None  # draining: the stream goes on
        received = len(stream.events)

        _signal(server)()

        assert wait_for_exit(server.process, timeout_s=15) == 0
        assert len(stream.events) > received
        assert stream.events[-1]["details"] is None  # cut short, as a second signal asks
