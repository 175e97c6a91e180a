"""OpenAI-compatible routes as TGI serves them: /v1/chat/completions, /v1/completions and
/v1/models (contract 1.6-1.8).

Errors found before generation (template, tools, completions' suffix and batch size) get a real
status and the native JSON body. Once a stream has started, an error is one in-band event
`{"error": {"message": ..., "http_status_code": 422}}` and the stream still ends with [DONE]."""

import contextlib
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, replace

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from sluice.api.chat_responses import ChatReplyShape, chat_finish_reason
from sluice.api.completion_streams import complete_prompts, completion_events
from sluice.api.counted_generation import counted_generation
from sluice.api.disconnect import unless_disconnected
from sluice.api.error_mapping import ERROR_RESPONSES
from sluice.api.openai_inputs import (
    chat_inputs,
    chat_parameters,
    completion_parameters,
    served_model_name,
)
from sluice.api.openai_schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Completion,
    CompletionRequest,
    ModelCard,
    ModelList,
)
from sluice.api.request_timer import RequestTimer
from sluice.api.sse import DONE_EVENT, EventStream, openai_error_event, sse_event
from sluice.api.state import ServingState, serving_state
from sluice.errors import (
    ClientBatchSizeError,
    SluiceError,
    SuffixNotSupportedError,
)
from sluice.frontend.chat_prompt import ChatInputs, ChatPrompt, prepare_chat_prompt
from sluice.frontend.chat_template import ChatTemplate
from sluice.frontend.generation import GeneratedToken
from sluice.frontend.grammar import Grammar
from sluice.frontend.input_processor import GenerationParameters, ValidatedRequest
from sluice.frontend.tools import ToolCallDelta, ToolCallStream, parse_tool_call
from sluice.ipc.messages import FinishReason

router = APIRouter()

STREAM_HEADERS = {"X-Accel-Buffering": "no"}
STREAM_RESPONSES: dict[int | str, dict[str, object]] = {
    **ERROR_RESPONSES,
    200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE chunks"},
}


@dataclass(frozen=True, slots=True)
class ChatRun:
    """One chat request on its way through generation."""

    state: ServingState
    chat: ChatInputs
    params: GenerationParameters
    shape: ChatReplyShape

    def without_tools(self) -> "ChatRun":
        return replace(self, chat=self.chat.without_tools())

    def params_for(self, prompt: ChatPrompt) -> GenerationParameters:
        """A tool call is held to the tools' `$functions` grammar."""
        if prompt.tools is None:
            return self.params
        return replace(self.params, grammar=Grammar("json", prompt.tools.grammar))

    def prepare(self) -> ChatPrompt:
        try:
            template = ChatTemplate.from_tokenizer(self.state.tokenizer)
            return prepare_chat_prompt(template, self.chat)
        except SluiceError as error:
            self.state.metrics.observe_failure(error)
            raise


@router.post("/v1/chat/completions", response_model=ChatCompletion, responses=STREAM_RESPONSES)
async def chat_completions(request: Request, body: ChatRequest) -> Response:
    state = serving_state(request)
    state.metrics.request_count.inc()
    chat = chat_inputs(body)
    shape = ChatReplyShape(
        model=served_model_name(body.model, state.model_id),
        with_logprobs=bool(body.logprobs),
        tool_call_id=chat.next_tool_call_id(),
    )
    run = ChatRun(state, chat, chat_parameters(body), shape)
    prompt = run.prepare()
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        events = _chat_events(run, prompt, include_usage=include_usage)
        return EventStream(events, headers=STREAM_HEADERS)
    return await unless_disconnected(request, _chat_reply(run, prompt))


async def _chat_reply(run: ChatRun, prompt: ChatPrompt) -> Response:
    completion, answer = await _chat_completion(run, prompt)
    headers = answer.timer.headers(run.state.compute_type, len(answer.prompt_text))
    return JSONResponse(completion.model_dump(), headers=headers)


@dataclass(frozen=True, slots=True)
class _ChatAnswer:
    tokens: list[GeneratedToken]
    request: ValidatedRequest
    timer: RequestTimer
    prompt_text: str
    chose_no_tool: bool = False

    @property
    def text(self) -> str:
        return self.tokens[-1].generated_text if self.tokens else ""

    @property
    def finish_reason(self) -> str:
        reason = self.tokens[-1].finish_reason if self.tokens else None
        return chat_finish_reason(reason or FinishReason.LENGTH)


async def _chat_completion(run: ChatRun, prompt: ChatPrompt) -> tuple[ChatCompletion, _ChatAnswer]:
    """The reply, and the generation that made it (the re-run when a tool call chose
    `no_tool`)."""
    answer = await _generate(run, prompt)
    num_prompt_tokens = len(answer.request.prompt_token_ids)
    if prompt.tools is None:
        reply = run.shape.completion(answer.tokens, answer.finish_reason, num_prompt_tokens)
        return reply, answer
    call = None if answer.chose_no_tool else parse_tool_call(answer.text)
    if call is None or call.is_no_tool:
        plain = run.without_tools()
        return await _chat_completion(plain, plain.prepare())
    reply = run.shape.completion(answer.tokens, answer.finish_reason, num_prompt_tokens, call)
    return reply, answer


async def _generate(run: ChatRun, prompt: ChatPrompt) -> _ChatAnswer:
    """The whole answer; a tool call that names `no_tool` is left as soon as it does."""
    tool_stream = None if prompt.tools is None else ToolCallStream()
    tokens: list[GeneratedToken] = []
    async with counted_generation(run.state, prompt.text, run.params_for(prompt)) as generation:
        async for token in generation.tokens:
            tokens.append(token)
            if tool_stream is not None:
                tool_stream.push("" if token.is_special else token.text)
                if tool_stream.chose_no_tool:
                    break
    chose_no_tool = tool_stream is not None and tool_stream.chose_no_tool
    return _ChatAnswer(tokens, generation.request, generation.timer, prompt.text, chose_no_tool)


async def _chat_events(
    run: ChatRun, prompt: ChatPrompt, *, include_usage: bool
) -> AsyncGenerator[bytes, None]:
    chunks = _chat_chunks(run, prompt, include_usage=include_usage)
    try:
        # Closed as this stream closes, even between two events: that aborts the generation.
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                yield sse_event(chunk.model_dump())
    except SluiceError as error:
        yield openai_error_event(str(error))
    yield DONE_EVENT


async def _chat_chunks(
    run: ChatRun, prompt: ChatPrompt, *, include_usage: bool
) -> AsyncGenerator[ChatCompletionChunk, None]:
    if prompt.tools is None:
        async with counted_generation(run.state, prompt.text, run.params) as generation:
            async for token in generation.tokens:
                yield run.shape.text_chunk(token)
                if include_usage and token.finish_reason is not None:
                    yield run.shape.usage_chunk(generation.num_prompt_tokens, token.index)
        return
    tool_stream = ToolCallStream()
    tool_chunks = _tool_chunks(run, prompt, tool_stream, include_usage=include_usage)
    async with contextlib.aclosing(tool_chunks):
        async for chunk in tool_chunks:
            yield chunk
    if tool_stream.chose_no_tool:
        plain = run.without_tools()
        plain_chunks = _chat_chunks(plain, plain.prepare(), include_usage=include_usage)
        async with contextlib.aclosing(plain_chunks):
            async for chunk in plain_chunks:
                yield chunk


async def _tool_chunks(
    run: ChatRun, prompt: ChatPrompt, tool_stream: ToolCallStream, *, include_usage: bool
) -> AsyncGenerator[ChatCompletionChunk, None]:
    """Nothing until the function name is known, then the arguments as they come; stops at
    `no_tool` (the caller re-runs without tools)."""
    async with counted_generation(run.state, prompt.text, run.params_for(prompt)) as generation:
        async for token in generation.tokens:
            delta = tool_stream.push("" if token.is_special else token.text)
            if tool_stream.chose_no_tool:
                return
            reason = token.finish_reason
            if delta is not None or reason is not None:
                yield _tool_chunk(run.shape, tool_stream, delta, token, reason)
            if reason is not None:
                if include_usage:
                    yield run.shape.usage_chunk(generation.num_prompt_tokens, token.index)
                return


def _tool_chunk(
    shape: ChatReplyShape,
    tool_stream: ToolCallStream,
    delta: ToolCallDelta | None,
    token: GeneratedToken,
    reason: FinishReason | None,
) -> ChatCompletionChunk:
    if delta is not None:
        return shape.tool_chunk(delta, token, reason)
    return shape.finish_chunk(reason, is_tool_call=tool_stream.name is not None)


@router.post("/v1/completions", response_model=Completion, responses=STREAM_RESPONSES)
async def completions(request: Request, body: CompletionRequest) -> Response:
    state = serving_state(request)
    state.metrics.request_count.inc()
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    _check_completion_request(state, body, prompts)
    params = completion_parameters(body)
    if body.stream:
        events = completion_events(state, prompts, params)
        return EventStream(events, headers=STREAM_HEADERS)
    return await unless_disconnected(request, _completion_reply(state, prompts, params))


async def _completion_reply(
    state: ServingState, prompts: Sequence[str], params: GenerationParameters
) -> Response:
    return JSONResponse((await complete_prompts(state, prompts, params)).model_dump())


def _check_completion_request(
    state: ServingState, body: CompletionRequest, prompts: Sequence[str]
) -> None:
    max_prompts = state.config.api.max_client_batch_size
    try:
        if body.suffix is not None:
            raise SuffixNotSupportedError()
        if len(prompts) > max_prompts:
            raise ClientBatchSizeError(max_prompts)
    except SluiceError as error:
        state.metrics.observe_failure(error)
        raise


@router.get("/v1/models", response_model=ModelList)
async def models(request: Request) -> ModelList:
    model_id = serving_state(request).model_id
    return ModelList(data=[ModelCard(id=model_id, owned_by=model_id)])
