"""The request gate: while the server drains (api/shutdown.py) new work and health checks get
503, other reads pass, and it counts the requests it let through until their responses end; a
client that stops reading is dropped and its event stream closed."""

import asyncio
from collections.abc import AsyncGenerator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Message

from sluice.api.middleware import RequestGate
from sluice.api.shutdown import SHUTTING_DOWN, Shutdown
from sluice.api.sse import EventStream


def _client(shutdown: Shutdown, seen_open: list[int]) -> httpx.AsyncClient:
    async def answer(request: Request) -> JSONResponse:
        seen_open.append(shutdown.open_requests)
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[
            Route("/health", answer),
            Route("/info", answer),
            Route("/generate", answer, methods=["POST"]),
        ]
    )
    gated = RequestGate(app, api_key=None, payload_limit=1000, shutdown=shutdown, send_timeout_s=60)
    return httpx.AsyncClient(transport=httpx.ASGITransport(gated), base_url="http://sluice")


def test_requests_pass_and_are_counted_until_their_response_ends() -> None:
    shutdown, seen_open = Shutdown(timeout_s=90), []

    async def run() -> list[int]:
        async with _client(shutdown, seen_open) as client:
            return [
                (await client.get("/health")).status_code,
                (await client.post("/generate", json={})).status_code,
            ]

    assert asyncio.run(run()) == [200, 200]
    assert seen_open == [1, 1] and shutdown.open_requests == 0


def test_a_draining_server_refuses_new_work_and_fails_its_health_check() -> None:
    shutdown, seen_open = Shutdown(timeout_s=90), []
    shutdown.begin()

    async def run() -> list[httpx.Response]:
        async with _client(shutdown, seen_open) as client:
            return [
                await client.get("/health"),
                await client.post("/generate", json={}),
                await client.get("/info"),
            ]

    health, generate, info = asyncio.run(run())
    refusal = {"error": SHUTTING_DOWN, "error_type": "unhealthy"}
    assert (health.status_code, health.json()) == (503, refusal)
    assert (generate.status_code, generate.json()) == (503, refusal)
    assert info.status_code == 200 and seen_open == [1]
    assert shutdown.draining and not shutdown.overdue()


def test_the_deadline_passes_after_the_timeout() -> None:
    shutdown = Shutdown(timeout_s=0)
    assert not shutdown.overdue()
    shutdown.begin()
    assert shutdown.overdue()


def test_a_client_that_stops_reading_is_dropped_and_its_stream_closed() -> None:
    shutdown, closed = Shutdown(timeout_s=90), asyncio.Event()

    async def tokens() -> AsyncGenerator[bytes, None]:
        try:
            while True:
                yield b"data: {}\n\n"
                await asyncio.sleep(0)
        finally:  # where a stream releases its permit and aborts its generation
            closed.set()

    async def stream(request: Request) -> EventStream:
        return EventStream(tokens())

    app = Starlette(routes=[Route("/generate_stream", stream, methods=["POST"])])
    gated = RequestGate(
        app, api_key=None, payload_limit=1000, shutdown=shutdown, send_timeout_s=0.2
    )
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/generate_stream",
        "headers": [(b"content-type", b"application/json")],
        "query_string": b"",
    }
    sent: list[Message] = []
    requests = iter([{"type": "http.request", "body": b"{}", "more_body": False}])

    async def receive() -> Message:
        for request in requests:
            return request
        await asyncio.Event().wait()  # the client never disconnects either
        raise AssertionError

    async def stalled_send(message: Message) -> None:
        sent.append(message)
        if len(sent) > 3:  # the socket's buffers are full: the client reads nothing
            await asyncio.Event().wait()

    async def run() -> None:
        async with asyncio.timeout(5):
            await gated(scope, receive, stalled_send)
            await asyncio.wait_for(closed.wait(), timeout=2)

    asyncio.run(run())
    assert sent[0]["status"] == 200 and shutdown.open_requests == 0
