import asyncio
from collections.abc import AsyncGenerator

import pytest
from fastapi import Request, Response
from starlette.types import Message

from sluice.api.disconnect import counting_drops, unless_disconnected
from sluice.api.metrics import ServerMetrics
from sluice.errors import GenerationError


class _Client:
    """The ASGI `receive` side of a client whose body was read: it can only hang up."""

    def __init__(self) -> None:
        self._messages: asyncio.Queue[Message] = asyncio.Queue()
        self.request = Request(
            {"type": "http", "method": "POST", "path": "/", "headers": []}, self._messages.get
        )

    def hang_up(self) -> None:
        self._messages.put_nowait({"type": "http.disconnect"})


class _Reply:
    """A reply that waits for `finish`, recording whether it was cancelled."""

    def __init__(self) -> None:
        self.finish = asyncio.Event()
        self.cancelled = False

    async def __call__(self) -> Response:
        try:
            await self.finish.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return Response("done")


def _dropped(metrics: ServerMetrics) -> float:
    value = metrics.registry.get_sample_value("tgi_request_failure_total", {"err": "dropped"})
    return value or 0.0


def test_unless_disconnected_answers_the_reply_while_the_client_stays() -> None:
    async def scenario() -> None:
        client, reply = _Client(), _Reply()
        reply.finish.set()
        response = await unless_disconnected(client.request, reply())
        assert response.body == b"done"
        await asyncio.sleep(0)  # the watcher's cancellation lands
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(scenario())


def test_unless_disconnected_cancels_the_reply_when_the_client_leaves() -> None:
    async def scenario() -> None:
        client, reply = _Client(), _Reply()
        answering = asyncio.create_task(unless_disconnected(client.request, reply()))
        await asyncio.sleep(0.01)
        client.hang_up()
        response = await asyncio.wait_for(answering, timeout=5)
        assert reply.cancelled
        assert response.status_code == 499
        assert b'"error_type":"dropped"' in response.body

    asyncio.run(scenario())


def test_unless_disconnected_passes_the_reply_error_on() -> None:
    async def failing() -> Response:
        raise GenerationError("boom")

    async def scenario() -> None:
        with pytest.raises(GenerationError):
            await unless_disconnected(_Client().request, failing())

    asyncio.run(scenario())


def test_unless_disconnected_is_cancelled_from_outside_like_any_await() -> None:
    async def scenario() -> None:
        client, reply = _Client(), _Reply()
        answering = asyncio.create_task(unless_disconnected(client.request, reply()))
        await asyncio.sleep(0.01)
        answering.cancel()
        with pytest.raises(asyncio.CancelledError):
            await answering
        assert reply.cancelled

    asyncio.run(scenario())


def test_counting_drops_counts_a_cancelled_generation_only() -> None:
    metrics = ServerMetrics()

    async def generation(finish: asyncio.Event) -> None:
        with counting_drops(metrics):
            await finish.wait()

    async def scenario() -> None:
        finished = asyncio.Event()
        finished.set()
        await generation(finished)
        assert _dropped(metrics) == 0
        abandoned = asyncio.create_task(generation(asyncio.Event()))
        await asyncio.sleep(0)
        abandoned.cancel()
        with pytest.raises(asyncio.CancelledError):
            await abandoned
        assert _dropped(metrics) == 1

    asyncio.run(scenario())


def test_counting_drops_counts_a_stream_closed_early() -> None:
    metrics = ServerMetrics()

    async def stream() -> AsyncGenerator[int, None]:
        with counting_drops(metrics):
            for index in range(3):
                yield index

    async def scenario() -> None:
        tokens = stream()
        assert [token async for token in tokens] == [0, 1, 2]
        assert _dropped(metrics) == 0
        tokens = stream()
        await anext(tokens)
        await tokens.aclose()
        assert _dropped(metrics) == 1

    asyncio.run(scenario())
