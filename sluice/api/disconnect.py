"""A client that goes away has its request dropped, as TGI drops one whose response channel
closes: every generation is aborted in the engine (its KV blocks freed at the next step) and
counted as `tgi_request_failure{err="dropped"}`.

A streamed reply notices the disconnection when Starlette stops reading it; a non-streamed one
sends nothing until it is whole, so `unless_disconnected` watches for it."""

import asyncio
import contextlib
from collections.abc import Awaitable, Iterator

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from sluice.api.error_mapping import error_body, status_for
from sluice.api.metrics import ServerMetrics
from sluice.errors import DroppedError


async def unless_disconnected(request: Request, reply: Awaitable[Response]) -> Response:
    """`reply`'s response, unless the client disconnects first: then `reply` is cancelled,
    which aborts each of its generations, and the answer is a 499 that nobody reads."""
    replying = asyncio.ensure_future(reply)
    watching = asyncio.create_task(_cancel_on_disconnect(request, replying))
    try:
        return await replying
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if not watching.done() or (current is not None and current.cancelling()):
            raise  # cancelled from outside (server shutdown), not by the client
        error = DroppedError()
        return JSONResponse(error_body(error), status_code=status_for(error))
    finally:
        watching.cancel()


async def _cancel_on_disconnect(request: Request, task: asyncio.Future[Response]) -> None:
    # The body has been read (middleware.py replays it), so what comes next is the disconnection.
    while (await request.receive())["type"] != "http.disconnect":
        pass
    task.cancel()


@contextlib.contextmanager
def counting_drops(metrics: ServerMetrics) -> Iterator[None]:
    """Counts a generation left before its end, by cancellation or by closing its stream, as
    dropped. Wrap each generation once: TGI counts every dropped generation of a request."""
    try:
        yield
    except (asyncio.CancelledError, GeneratorExit):
        metrics.observe_failure(DroppedError())
        raise
