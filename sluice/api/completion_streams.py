"""/v1/completions with several prompts, as TGI runs them (contract 1.7): each prompt is its
own concurrent generation. Non-streamed, the choices come in completion order with summed
usage; streamed, the prompts' chunks interleave, intermediate ones with `finish_reason` "" and
no `usage`, each prompt's last one with the raw native finish reason and that prompt's usage."""

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

from sluice.api.chat_responses import SYSTEM_FINGERPRINT, chat_finish_reason, usage
from sluice.api.counted_generation import StartedGeneration, counted_generation
from sluice.api.openai_schemas import Completion, CompletionChoice, CompletionChunk
from sluice.api.sse import DONE_EVENT, openai_error_event, sse_event
from sluice.api.state import ServingState
from sluice.errors import SluiceError
from sluice.frontend.generation import GeneratedToken
from sluice.frontend.input_processor import GenerationParameters


@dataclass(frozen=True, slots=True)
class _PromptResult:
    choice: CompletionChoice
    num_prompt_tokens: int
    num_generated_tokens: int


async def complete_prompts(
    state: ServingState, prompts: Sequence[str], params: GenerationParameters
) -> Completion:
    """Every prompt's whole text; the first failure cancels the others and is raised."""
    tasks = [
        asyncio.create_task(_complete_prompt(state, index, prompt, params))
        for index, prompt in enumerate(prompts)
    ]
    try:
        results = [await done for done in asyncio.as_completed(tasks)]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    num_prompt = sum(result.num_prompt_tokens for result in results)
    num_generated = sum(result.num_generated_tokens for result in results)
    return Completion(
        id="",
        created=int(time.time()),
        model=state.model_id,
        system_fingerprint=SYSTEM_FINGERPRINT,
        choices=[result.choice for result in results],
        usage=usage(num_prompt, num_generated),
    )


async def _complete_prompt(
    state: ServingState, index: int, prompt: str, params: GenerationParameters
) -> _PromptResult:
    async with counted_generation(state, prompt, params) as generation:
        tokens = [token async for token in generation.tokens]
    last = tokens[-1]
    assert last.finish_reason is not None  # generate_tokens ends with the finishing token
    choice = CompletionChoice(
        index=index, text=last.generated_text, finish_reason=chat_finish_reason(last.finish_reason)
    )
    return _PromptResult(choice, generation.num_prompt_tokens, len(tokens))


async def completion_events(
    state: ServingState, prompts: Sequence[str], params: GenerationParameters
) -> AsyncGenerator[bytes, None]:
    """SSE events of every prompt as they come, then [DONE]. A failing prompt sends one error
    event and the others carry on. Leaving early (client gone) cancels every prompt."""
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    tasks = [
        asyncio.create_task(_stream_prompt(state, index, prompt, params, queue))
        for index, prompt in enumerate(prompts)
    ]
    num_streaming = len(tasks)
    try:
        while num_streaming:
            event = await queue.get()
            if event is None:  # a prompt has nothing more to send
                num_streaming -= 1
            else:
                yield event
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    yield DONE_EVENT


async def _stream_prompt(
    state: ServingState,
    index: int,
    prompt: str,
    params: GenerationParameters,
    queue: asyncio.Queue[bytes | None],
) -> None:
    try:
        async with counted_generation(state, prompt, params) as generation:
            async for token in generation.tokens:
                queue.put_nowait(sse_event(_chunk(state, index, token, generation).model_dump()))
    except SluiceError as error:
        queue.put_nowait(openai_error_event(str(error)))
    finally:
        queue.put_nowait(None)


def _chunk(
    state: ServingState, index: int, token: GeneratedToken, generation: StartedGeneration
) -> CompletionChunk | Completion:
    if token.finish_reason is None:
        return CompletionChunk(
            id="",
            created=int(time.time()),
            choices=[CompletionChoice(index=index, text=token.text, finish_reason="")],
            model=state.model_id,
            system_fingerprint=SYSTEM_FINGERPRINT,
        )
    choice = CompletionChoice(index=index, text=token.text, finish_reason=token.finish_reason.value)
    return Completion(
        id="",
        created=int(time.time()),
        model=state.model_id,
        system_fingerprint=SYSTEM_FINGERPRINT,
        choices=[choice],
        usage=usage(generation.num_prompt_tokens, token.index),
    )
