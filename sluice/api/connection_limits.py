"""Limits that protect the process from its connections, enforced in uvicorn's HTTP/1.1
protocol, below the app (which only ever sees requests whose head has arrived):

- at most `max_connections` open connections: the next one is answered 503 with a JSON error
  and closed at once, before it can hold a file descriptor for long;
- a request's line and headers fit in `max_header_bytes`, else 431;
- a request arrives whole (line, headers and body) within `request_read_timeout` seconds of its
  first byte, or of the connection opening: else 408 and the connection is closed, so that a
  client trickling bytes (slowloris) cannot hold a connection open for ever;
- TCP keep-alive probes on every connection, so that a peer gone without closing (a half-open
  connection: a cable pulled, a laptop suspended) is noticed while its request runs, and the
  request is aborted as if the client had disconnected.

Idle connections between requests close after uvicorn's keep-alive timeout (5 s)."""

import asyncio
import json
import socket
from collections.abc import Callable
from functools import partial
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from sluice.config import ServerConfig

LINGER_S = 2.0
"""How long a refused connection stays half-closed, reading and dropping what the client still
sends: closing a socket with unread data resets it, which can destroy the answer in flight."""
KEEPALIVE_PROBES = 4


def limited_protocol(limits: ServerConfig) -> Callable[..., "LimitedH11Protocol"]:
    """The protocol factory to pass to uvicorn's `Config(http=...)`, enforcing the connection
    limits of `limits` (its fields document them)."""
    return partial(LimitedH11Protocol, limits=limits)


class LimitedH11Protocol(H11Protocol):
    def __init__(self, *args: Any, limits: ServerConfig, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.read_deadline: asyncio.TimerHandle | None = None
        self.refused = False
        self.head_bytes = 0
        """Bytes of the request head on its way, before the chunk being received."""
        self.head_tail = b""
        """The last bytes of the head so far, to find its end across chunks."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self.logger.warning("refused a connection: %d are open", len(self.connections) - 1)
            body = {"error": "Too many open connections", "error_type": "overloaded"}
            self._refuse(503, "application/json", json.dumps(body))
            return
        _enable_tcp_keepalive(transport, self.limits.tcp_keepalive)
        self._arm_read_deadline()

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.conn.their_state is h11.IDLE and self._head_too_large(data):
            limit = self.limits.max_header_bytes
            self._cancel_read_deadline()
            self._refuse(431, "text/plain", f"Request line and headers exceed {limit} bytes")
            return
        super().data_received(data)
        if self.refused or self.transport.is_closing():
            return
        if self.conn.their_state is not h11.IDLE:
            self.head_bytes, self.head_tail = 0, b""
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY):  # a request is on its way
            if self.read_deadline is None:
                self._arm_read_deadline()
        else:
            self._cancel_read_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_deadline()
        super().connection_lost(exc)

    def _head_too_large(self, data: bytes) -> bool:
        """Whether the head being received, with `data`, passes the limit before it ends.
        (h11's own limit applies to a head only while it is incomplete: a large one that
        arrives in one read would pass it.)"""
        seen = self.head_tail + data
        end = seen.find(b"\r\n\r\n")
        if end >= 0:
            return self.head_bytes + end + 4 - len(self.head_tail) > self.limits.max_header_bytes
        self.head_bytes += len(data)
        self.head_tail = seen[-3:]
        return self.head_bytes > self.limits.max_header_bytes

    def _arm_read_deadline(self) -> None:
        self.read_deadline = self.loop.call_later(
            self.limits.request_read_timeout, self._read_timed_out
        )

    def _cancel_read_deadline(self) -> None:
        if self.read_deadline is not None:
            self.read_deadline.cancel()
            self.read_deadline = None

    def _read_timed_out(self) -> None:
        self.read_deadline = None
        timeout = self.limits.request_read_timeout
        self.logger.warning("closed a connection whose request did not arrive in %.0f s", timeout)
        answered = self.cycle is not None and self.conn.our_state is not h11.SEND_RESPONSE
        if self.cycle is not None:  # the app is waiting for a body that will not come
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        if answered:  # the app has begun its own answer: nothing more can be said
            self.transport.close()
        else:
            self._refuse(408, "text/plain", f"The request did not arrive whole in {timeout:g} s")

    def _refuse(self, status: int, content_type: str, text: str) -> None:
        """Answer with `status` and close: written as raw bytes, since h11 has no request to
        answer (or has given up on it); then half-close and drop what still comes."""
        self.refused = True
        body = text.encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: {content_type}\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()


_REASONS = {
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


def _enable_tcp_keepalive(transport: asyncio.Transport, idle_s: float) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if not hasattr(socket, "TCP_KEEPIDLE"):  # not Linux: the system's timing applies
        return
    idle = max(1, round(idle_s))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, idle // KEEPALIVE_PROBES))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
    # Probes go out only while nothing is in flight; data the peer never acknowledges (an
    # answer sent to a vanished client) times out after the same while.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 2 * idle * 1000)
