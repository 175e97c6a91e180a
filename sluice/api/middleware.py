"""Checks every request must pass before a route sees it: the server not shutting down, the
API key, the JSON content type and the body size limit. Each refusal is a JSON error body (TGI
answers some in plain text; the contract's decision is JSON everywhere). It also drops the
connection of a client that stops reading its response: a response waits on it at most
`send_timeout_s`, then the request ends (a stream's generation is aborted and its KV blocks
freed) instead of holding a concurrency permit and its buffered tokens for ever."""

import asyncio
import hmac
import json
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sluice.api.playground_routes import PAGE_PATH
from sluice.api.shutdown import SHUTTING_DOWN, Shutdown

logger = logging.getLogger(__name__)

HEALTH_PATHS = frozenset({"/health", "/ping", "/"})
"""Open without the API key: liveness probes must not need secrets."""


class RequestGate:
    """Pure ASGI middleware, so that streaming responses pass through untouched."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_key: str | None,
        payload_limit: int,
        shutdown: Shutdown,
        send_timeout_s: float,
    ) -> None:
        self.app = app
        self.expected_authorization = None if api_key is None else f"bearer {api_key}".lower()
        self.payload_limit = payload_limit
        self.shutdown = shutdown
        self.send_timeout_s = send_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
        }
        is_health = scope["method"] == "GET" and scope["path"] in HEALTH_PATHS
        if self.shutdown.draining and (is_health or scope["method"] == "POST"):
            # No new work, and a health check that sends the load balancer elsewhere.
            await _refuse(send, 503, SHUTTING_DOWN, "unhealthy")
            return
        # The playground's page and assets are static files (the page asks for the key).
        is_page = scope["method"] == "GET" and scope["path"].startswith(PAGE_PATH)
        if not (is_health or is_page) and not self._is_authorized(headers):
            await _refuse(send, 401, "Unauthorized", "unauthorized")
            return
        self.shutdown.open_requests += 1
        try:
            await self._checked(scope, receive, self._timed(send), headers)
        except* _ClientStalled:  # a response's task group may wrap it
            logger.warning(
                "dropped %s %s: its client read nothing for %.0f s",
                scope["method"],
                scope["path"],
                self.send_timeout_s,
            )
        finally:
            self.shutdown.open_requests -= 1

    def _timed(self, send: Send) -> Send:
        async def send_in_time(message: Message) -> None:
            try:
                async with asyncio.timeout(self.send_timeout_s):
                    await send(message)
            except TimeoutError:
                raise _ClientStalled from None

        return send_in_time

    async def _checked(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]
    ) -> None:
        if scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            message = "Expected request with `Content-Type: application/json`"
            await _refuse(send, 415, message, "unsupported_media_type")
            return
        body = await self._read_body(receive)
        if body is None:
            message = "Failed to buffer the request body: length limit exceeded"
            await _refuse(send, 413, message, "payload_too_large")
            return
        await self.app(scope, _replay(body, receive), send)

    def _is_authorized(self, headers: dict[str, str]) -> bool:
        if self.expected_authorization is None:
            return True
        given = headers.get("authorization", "").lower()
        return hmac.compare_digest(given.encode(), self.expected_authorization.encode())

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it passes the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.payload_limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


class _ClientStalled(Exception):
    """The client stopped reading: a response could not be handed to it in time."""


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the already-read body, then passes on the client's
    later messages (its disconnection, which cancels a stream)."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _refuse(send: Send, status: int, error: str, error_type: str) -> None:
    body = json.dumps({"error": error, "error_type": error_type}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
