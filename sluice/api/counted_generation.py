"""One native generation as the OpenAI routes run it, under the same rules as /generate: counted
in `tgi_request_count`, holding a concurrency permit (429 without one), validated by the input
processor, and counted as a success or as a failure by error type when it ends.

A chat or completions call runs one of these per prompt (and a second one when a tool call
turns into `no_tool`), each counted, as TGI counts its internal generate calls."""

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from sluice.api.disconnect import counting_drops
from sluice.api.request_timer import RequestTimer
from sluice.api.state import ServingState
from sluice.errors import SluiceError
from sluice.frontend.generation import GeneratedToken, generate_tokens
from sluice.frontend.input_processor import GenerationParameters, ValidatedRequest


@dataclass(frozen=True, slots=True)
class StartedGeneration:
    request: ValidatedRequest
    tokens: AsyncGenerator[GeneratedToken, None]
    """Ends with the token that carries the finish reason; leaving early aborts the request."""
    timer: RequestTimer
    """Follows the tokens as they are read; gives the x-* headers of a non-streamed reply."""

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.request.prompt_token_ids)


@contextlib.asynccontextmanager
async def counted_generation(
    state: ServingState, inputs: str, params: GenerationParameters
) -> AsyncIterator[StartedGeneration]:
    """Errors raised inside (overload, validation, generation) are counted as failures and
    propagate, and so is a cancellation (dropped); leaving the block normally counts a success,
    whether or not every token was read (a caller stops reading once a tool call's JSON is
    complete)."""
    timer = RequestTimer()
    state.metrics.request_count.inc()
    try:
        state.take_permit()
    except SluiceError as error:
        state.metrics.observe_failure(error)
        raise
    try:
        request = state.processor.process(inputs, params)
        timer.mark_validated(request)
        tokens = _timed(generate_tokens(state.client, state.tokenizer, request), timer)
        assert isinstance(tokens, AsyncGenerator)  # closed explicitly when left early
        with counting_drops(state.metrics):
            async with contextlib.aclosing(tokens):
                yield StartedGeneration(request, tokens, timer)
    except SluiceError as error:
        state.metrics.observe_failure(error)
        raise
    finally:
        state.release_permit()
    state.metrics.observe_request(timer)


async def _timed(
    tokens: AsyncIterator[GeneratedToken], timer: RequestTimer
) -> AsyncIterator[GeneratedToken]:
    async with contextlib.aclosing(tokens):
        async for token in tokens:
            timer.mark_token(token)
            yield token
