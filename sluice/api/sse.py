"""Server-sent events: the framing (one `data: <json>` line and a blank line per event) and the
response that streams them."""

import json
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


def sse_event(payload: Mapping[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


DONE_EVENT = b"data: [DONE]\n\n"
"""The last event of the OpenAI-compatible streams (never of /generate_stream)."""


def openai_error_event(message: str) -> bytes:
    """An error inside an OpenAI-compatible stream; TGI sends 422 whatever the cause."""
    return sse_event({"error": {"message": message, "http_status_code": 422}})


class EventStream(StreamingResponse):
    """A `text/event-stream` response that closes its event generator however the response
    ends. When a send fails (a client that stopped reading, see api/middleware.py) Starlette
    leaves the generator to the garbage collector, and with it the request's concurrency
    permit and its generation in the engine."""

    def __init__(
        self, events: AsyncGenerator[bytes, None], headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(events, media_type="text/event-stream", headers=headers)
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.events.aclose()
