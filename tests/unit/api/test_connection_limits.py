"""The request-head size limit over heads cut into chunks anywhere (the e2e tests send each
head in one piece), driven through the protocol with a transport that records writes."""

import asyncio
from collections.abc import Awaitable, Callable, Iterator

import pytest
from uvicorn import Config
from uvicorn.server import ServerState

from sluice.api.connection_limits import LimitedH11Protocol
from sluice.config import ServerConfig

LIMIT = 100


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closing = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written += data

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def can_write_eof(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


async def _app(scope: object, receive: object, send: Callable[[dict], Awaitable[None]]) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _feed(loop: asyncio.AbstractEventLoop, chunks: list[bytes]) -> bytes:
    limits = ServerConfig(
        max_connections=10, max_header_bytes=LIMIT, request_read_timeout=30, tcp_keepalive=60
    )
    state = ServerState()
    protocol = LimitedH11Protocol(
        config=Config(app=_app),
        server_state=state,
        app_state={},
        _loop=loop,
        limits=limits,
    )
    transport = RecordingTransport()
    protocol.connection_made(transport)
    for chunk in chunks:
        protocol.data_received(chunk)
        while state.tasks:  # the requests that got through are answered
            loop.run_until_complete(asyncio.gather(*state.tasks))
    protocol.connection_lost(None)
    return transport.written


def _head(size: int) -> bytes:
    start = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: "
    end = b"\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end


@pytest.mark.parametrize("size", [LIMIT, LIMIT + 1])
@pytest.mark.parametrize("cut", [None, 1, 7, LIMIT - 3, LIMIT - 1])
def test_a_head_is_refused_exactly_when_it_passes_the_limit(
    loop: asyncio.AbstractEventLoop, size: int, cut: int | None
) -> None:
    head = _head(size)
    chunks = [head] if cut is None else [head[:cut], head[cut:]]
    written = _feed(loop, chunks)
    refused = written.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert refused == (size > LIMIT)


def test_each_head_of_a_connection_is_measured_from_its_own_start(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Two heads of the limit's size, one after the other, are both within it."""
    head = _head(LIMIT)
    written = _feed(loop, [head[:50], head[50:] + head[:10], head[10:]])
    assert written.count(b"HTTP/1.1 200 OK\r\n") == 2
