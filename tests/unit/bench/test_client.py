"""stream_request against a fake server (httpx.MockTransport): tokens are counted, and every way
a request can fail comes back as an error instead of vanishing; run_closed_loop keeps at most
`concurrency` requests in flight and sends each prompt once."""

import asyncio
import json
from collections.abc import Awaitable, Callable

import httpx
import pytest

from sluice.bench.client import RequestTiming, run_closed_loop, stream_request
from tests.unit.bench.fake_server import sse, token_stream

URL = "http://bench.test"
Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


def _send(handler: Handler, max_new_tokens: int = 4, ignore_eos: bool = True) -> RequestTiming:
    async def send() -> RequestTiming:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await stream_request(client, URL, "prompt", max_new_tokens, ignore_eos)

    return asyncio.run(send())


def test_stream_request_times_every_token_and_sends_the_parameters() -> None:
    bodies: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/generate_stream"
        bodies.append(json.loads(request.content))
        return httpx.Response(200, content=token_stream(4))

    result = _send(handler, max_new_tokens=4)

    assert result.error is None
    assert result.num_tokens == 4
    assert result.generated_text == "xxxx"
    assert bodies[0]["parameters"] == {"max_new_tokens": 4, "details": True, "ignore_eos": True}


def test_stream_request_can_leave_eos_alone() -> None:
    parameters: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        parameters.append(json.loads(request.content)["parameters"])
        return httpx.Response(200, content=token_stream(1))

    _send(handler, ignore_eos=False)

    assert "ignore_eos" not in parameters[0]


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (
            httpx.Response(422, json={"error": "too many tokens", "error_type": "validation"}),
            "HTTP 422: too many tokens",
        ),
        (httpx.Response(500, text="oops"), "HTTP 500: oops"),
        (
            httpx.Response(200, content=sse({"token": {"id": 1}}, {"error": "boom"})),
            "stream error: boom",
        ),
        (
            httpx.Response(200, content=sse({"token": {"id": 1}, "generated_text": None})),
            "stream ended before its final event",
        ),
        (httpx.Response(200, content=b"data: {not json\n\n"), "malformed event"),
    ],
)
def test_stream_request_reports_failures(response: httpx.Response, expected: str) -> None:
    result = _send(lambda request: response)

    assert result.error is not None
    assert result.error.startswith(expected)


def test_stream_request_reports_a_dropped_connection() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    result = _send(handler)

    assert result.error == "ConnectError: refused"


def test_run_closed_loop_keeps_concurrency_in_flight() -> None:
    in_flight = 0
    most_in_flight = 0
    seen_prompts: list[str] = []
    done: list[RequestTiming] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        seen_prompts.append(json.loads(request.content)["inputs"])
        await asyncio.sleep(0.01)
        in_flight -= 1
        return httpx.Response(200, content=token_stream(3))

    async def send() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            prompts = [f"p{i}" for i in range(7)]
            run = await run_closed_loop(client, URL, prompts, 3, 3, on_done=done.append)
            assert len(run.timings) == 7
            assert run.errors == []
            assert run.wall_s > 0

    asyncio.run(send())

    assert most_in_flight == 3
    assert sorted(seen_prompts) == sorted(f"p{i}" for i in range(7))
    assert len(done) == 7
