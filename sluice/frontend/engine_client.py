"""The API process's handle on the engine: submit a request, stream its outputs, abort it.

One reader task takes every engine output off the socket and routes each request's outputs to
that request's queue. If the engine dies, every open stream ends with an error."""

import asyncio
from collections.abc import AsyncIterator, Callable

from sluice.config import ServingLimits
from sluice.errors import EngineDeadError, GenerationError
from sluice.ipc.messages import (
    AbortRequests,
    AddRequest,
    EngineFailed,
    EngineReady,
    RequestOutput,
    StepOutputs,
    StepStats,
)
from sluice.ipc.transport import FrontendChannel
from sluice.sampling_params import SamplingParams

StatsListener = Callable[[StepStats], None]


class EngineClient:
    def __init__(
        self,
        channel: FrontendChannel,
        *,
        engine_failure: Callable[[], str | None],
        on_step: StatsListener | None = None,
    ) -> None:
        """`engine_failure`: why the engine, or one of its shards, is gone; None while they
        all run."""
        self._channel = channel
        self._engine_failure = engine_failure
        self._on_step = on_step
        self._streams: dict[str, asyncio.Queue[RequestOutput | Exception]] = {}
        self.ready = asyncio.Event()
        self.ready_info: EngineReady | None = None
        self.failure: str | None = None
        """Why the engine cannot serve (failed start-up or died); None while healthy."""

    @property
    def limits(self) -> ServingLimits:
        if self.ready_info is None:
            raise RuntimeError("the engine is not ready")
        return self.ready_info.limits

    @property
    def is_healthy(self) -> bool:
        self.check_engine()
        return self.ready.is_set() and self.failure is None

    def check_engine(self) -> None:
        """Notice a dead engine process or shard now rather than at the next output."""
        if self.failure is None:
            failure = self._engine_failure()
            if failure is not None:
                self.mark_dead(failure)

    async def run_output_loop(self) -> None:
        """Route engine outputs until the channel closes."""
        while True:
            message = await self._channel.receive()
            match message:
                case StepOutputs(outputs=outputs, stats=stats):
                    for output in outputs:
                        queue = self._streams.get(output.request_id)
                        if queue is not None:
                            queue.put_nowait(output)
                    if self._on_step is not None:
                        self._on_step(stats)
                case EngineReady():
                    self.ready_info = message
                    self.ready.set()
                case EngineFailed(message=text):
                    self.mark_dead(text)

    def mark_dead(self, reason: str) -> None:
        """The engine is gone: fail every open stream and every later request. (The launcher
        logs the reason as it shuts the server down.)"""
        if self.failure is None:
            self.failure = reason
        self.fail_open_requests(EngineDeadError(reason))

    def fail_open_requests(self, error: Exception) -> None:
        """End every request in flight with `error` (each aborts in the engine as it ends)."""
        for queue in self._streams.values():
            queue.put_nowait(error)

    async def generate(
        self, request_id: str, prompt_token_ids: list[int], sampling: SamplingParams
    ) -> AsyncIterator[RequestOutput]:
        """Submit a request and yield its outputs until it finishes. Leaving the loop early
        (client gone) aborts the request in the engine."""
        if self.failure is not None:
            raise EngineDeadError(self.failure)
        queue: asyncio.Queue[RequestOutput | Exception] = asyncio.Queue()
        self._streams[request_id] = queue
        finished = False
        try:
            await self._channel.send(AddRequest(request_id, prompt_token_ids, sampling))
            while not finished:
                item = await queue.get()
                if isinstance(item, Exception):
                    raise item
                if item.error is not None:
                    raise GenerationError(item.error)
                finished = item.finish_reason is not None
                yield item
        finally:
            del self._streams[request_id]
            if not finished and self.failure is None:
                await self._channel.send(AbortRequests([request_id]))
