"""Graceful stop: what the HTTP layer and the launcher share while the server drains.

On the first SIGTERM or SIGINT the server keeps listening but refuses new work (503) and fails
its health check, so that a load balancer sends traffic elsewhere, while every request it had
accepted runs to its end. It exits once none is left, or once `--graceful-termination-timeout`
passes; requests still running then end with an error saying so (an SSE error event, or a 503
body), never with a cut connection. A second signal stops the server at once."""

import time
from dataclasses import dataclass

SHUTTING_DOWN = "The server is shutting down"


@dataclass(slots=True)
class Shutdown:
    timeout_s: float
    """How long accepted requests may run on once draining starts (TGI's
    `--graceful-termination-timeout`)."""
    open_requests: int = 0
    """HTTP requests past the gate whose responses have not ended (streams included)."""
    deadline: float | None = None
    """When draining stops waiting (monotonic); None until a stop is asked for."""

    @property
    def draining(self) -> bool:
        return self.deadline is not None

    def begin(self) -> None:
        if self.deadline is None:
            self.deadline = time.monotonic() + self.timeout_s

    def overdue(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline
