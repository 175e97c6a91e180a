"""TGI's native routes: /generate, /generate_stream, / (compat), /info, /health, /metrics.

Errors before a stream starts get a status code and a JSON body; once a stream has started,
errors travel in-band as an SSE event and the status stays 200, as in TGI."""

import asyncio
import contextlib
import dataclasses
import secrets
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import msgspec
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from sluice import __version__
from sluice.api.disconnect import counting_drops, unless_disconnected
from sluice.api.error_mapping import ERROR_RESPONSES, error_body, status_for
from sluice.api.playground_routes import page_redirect, wants_page
from sluice.api.request_timer import RequestTimer
from sluice.api.schemas import (
    BestOfSequence,
    Details,
    GenerateRequest,
    GenerateResponse,
    Info,
    PrefillToken,
    StreamDetails,
    StreamResponse,
    Token,
)
from sluice.api.sse import EventStream, sse_event
from sluice.api.state import ServingState, serving_state
from sluice.errors import SluiceError, ValidationError
from sluice.frontend.generation import GeneratedToken, TopToken, generate_tokens
from sluice.frontend.grammar import Grammar
from sluice.frontend.input_processor import GenerationParameters, ValidatedRequest

router = APIRouter()


@router.get("/health", include_in_schema=True)
@router.get("/", include_in_schema=False)
@router.get("/ping", include_in_schema=False)
async def health(request: Request) -> Response:
    if request.url.path == "/" and wants_page(request):
        return page_redirect()
    if serving_state(request).client.is_healthy:
        return Response(status_code=200)
    return JSONResponse({"error": "unhealthy", "error_type": "healthcheck"}, status_code=503)


@router.get("/info", response_model=Info)
async def info(request: Request) -> Info:
    state = serving_state(request)
    limits = state.processor.limits
    ready = state.client.ready_info
    assert ready is not None  # the processor exists only once the engine is ready
    return Info(
        model_id=state.model_id,
        model_sha=state.model_sha,
        model_pipeline_tag=None,
        model_dtype=f"torch.{ready.dtype}",
        model_device_type=ready.device,
        max_concurrent_requests=state.config.scheduler.max_concurrent_requests,
        max_best_of=state.config.api.max_best_of,
        max_stop_sequences=state.config.api.max_stop_sequences,
        max_input_tokens=limits.max_input_tokens,
        max_total_tokens=limits.max_total_tokens,
        max_batch_total_tokens=limits.max_batch_total_tokens,
        validation_workers=1,
        max_client_batch_size=state.config.api.max_client_batch_size,
        router="text-generation-router",
        version=__version__,
        sha=None,
        docker_label=None,
        num_shard=ready.num_shard,
    )


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(serving_state(request).metrics.render(), media_type="text/plain; version=0.0.4")


@router.post("/generate", response_model=GenerateResponse, responses=ERROR_RESPONSES)
async def generate(request: Request, body: GenerateRequest) -> Response:
    reply = _generate_reply(serving_state(request), body, as_list=False)
    return await unless_disconnected(request, reply)


@router.post(
    "/",
    response_model=list[GenerateResponse],
    responses={**ERROR_RESPONSES, 200: {"content": {"text/event-stream": {}}}},
)
async def compat_generate(request: Request, body: GenerateRequest) -> Response:
    """TGI's compat route: `stream` picks /generate_stream or /generate (whose body comes back
    wrapped in a one-element array). `return_full_text` defaults to true here, as TGI does for
    a model whose Hub pipeline tag is text-generation or unknown."""
    if body.parameters.return_full_text is None:
        parameters = body.parameters.model_copy(update={"return_full_text": True})
        body = body.model_copy(update={"parameters": parameters})
    if body.stream:
        return await generate_stream(request, body)
    reply = _generate_reply(serving_state(request), body, as_list=True)
    return await unless_disconnected(request, reply)


async def _generate_reply(state: ServingState, body: GenerateRequest, *, as_list: bool) -> Response:
    try:
        response, timer = await _generate(state, body)
    except SluiceError as error:
        return _error_response(state, error)
    headers = timer.headers(state.compute_type, len(body.inputs))
    content = response.model_dump(exclude_unset=True)
    return JSONResponse([content] if as_list else content, headers=headers)


async def _generate(
    state: ServingState, body: GenerateRequest
) -> tuple[GenerateResponse, RequestTimer]:
    timer = RequestTimer()
    state.metrics.request_count.inc()
    sequences = await _generate_best_of(state, body, timer)
    state.metrics.observe_request(timer)
    best, *others = sorted(sequences, key=_mean_logprob, reverse=True)
    params = body.parameters
    text = _full_text(body, best.tokens[-1].generated_text)
    if not (params.details or params.decoder_input_details):
        return GenerateResponse(generated_text=text), timer
    details = _details(best.tokens, best.request)
    if others:
        details.best_of_sequences = [_best_of_sequence(body, other) for other in others]
    return GenerateResponse(generated_text=text, details=details), timer


@dataclass(frozen=True, slots=True)
class _Sequence:
    request: ValidatedRequest
    tokens: list[GeneratedToken]


async def _generate_best_of(
    state: ServingState, body: GenerateRequest, timer: RequestTimer
) -> list[_Sequence]:
    """Run `best_of` independent generations at once (one permit each, as TGI takes them);
    one failing cancels the others. The timer follows the first."""
    best_of = body.parameters.best_of or 1
    max_best_of = state.config.api.max_best_of
    permits = 0
    try:
        for _ in range(best_of):
            state.take_permit()
            permits += 1
        if best_of > 1 and max_best_of == 1:
            raise ValidationError("`best_of` != 1 is not allowed for this endpoint")
        if best_of > max_best_of:
            raise ValidationError(f"`best_of` must be > 0 and <= {max_best_of}. Given: {best_of}")
        first = _validate(state, body, streaming=False)
        timer.mark_validated(first)
        requests = [first] + [_reseeded(first) for _ in range(best_of - 1)]
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(_collect(state, r, timer if i == 0 else None))
                for i, r in enumerate(requests)
            ]
        return [_Sequence(r, task.result()) for r, task in zip(requests, tasks, strict=True)]
    except* SluiceError as errors:
        raise errors.exceptions[0] from None
    finally:
        for _ in range(permits):
            state.release_permit()


async def _collect(
    state: ServingState, request: ValidatedRequest, timer: RequestTimer | None
) -> list[GeneratedToken]:
    tokens = []
    with counting_drops(state.metrics):
        async for token in generate_tokens(state.client, state.tokenizer, request):
            if timer is not None:
                timer.mark_token(token)
            tokens.append(token)
    return tokens


def _reseeded(request: ValidatedRequest) -> ValidatedRequest:
    sampling = msgspec.structs.replace(request.sampling, seed=secrets.randbits(64))
    return dataclasses.replace(request, sampling=sampling)


def _mean_logprob(sequence: _Sequence) -> float:
    return sum(t.logprob for t in sequence.tokens) / len(sequence.tokens)


def _full_text(body: GenerateRequest, text: str) -> str:
    return body.inputs + text if body.parameters.return_full_text else text


def _best_of_sequence(body: GenerateRequest, sequence: _Sequence) -> BestOfSequence:
    details = _details(sequence.tokens, sequence.request)
    return BestOfSequence(
        generated_text=_full_text(body, sequence.tokens[-1].generated_text),
        **details.model_dump(exclude={"best_of_sequences"}, exclude_unset=True),
    )


@router.post("/generate_stream", responses={200: {"content": {"text/event-stream": {}}}})
async def generate_stream(request: Request, body: GenerateRequest) -> StreamingResponse:
    state = serving_state(request)
    state.metrics.request_count.inc()
    headers = {
        "X-Accel-Buffering": "no",
        "x-compute-type": state.compute_type,
        "x-compute-characters": str(len(body.inputs)),
    }
    return EventStream(_stream_events(state, body), headers=headers)


async def _stream_events(state: ServingState, body: GenerateRequest) -> AsyncGenerator[bytes, None]:
    timer = RequestTimer()
    try:
        state.take_permit()
    except SluiceError as error:
        state.metrics.observe_failure(error)
        yield sse_event(error_body(error))
        return
    try:
        validated = _validate(state, body, streaming=True)
        timer.mark_validated(validated)
        tokens = generate_tokens(state.client, state.tokenizer, validated)
        # Closed as this stream closes, even when it is closed between two events (a client
        # that stopped reading, see api/sse.py): that aborts the generation.
        with counting_drops(state.metrics):
            async with contextlib.aclosing(tokens):
                async for token in tokens:
                    timer.mark_token(token)
                    yield sse_event(_stream_event(token, body, validated))
    except SluiceError as error:
        state.metrics.observe_failure(error)
        yield sse_event(error_body(error))
        return
    finally:
        state.release_permit()
    state.metrics.observe_request(timer)


def _validate(state: ServingState, body: GenerateRequest, *, streaming: bool) -> ValidatedRequest:
    params = body.parameters
    if streaming and params.best_of not in (None, 1):
        raise ValidationError("`best_of` != 1 is not supported when streaming tokens")
    if streaming and params.decoder_input_details:
        raise ValidationError(
            "`decoder_input_details` == true is not supported when streaming tokens"
        )
    return state.processor.process(
        body.inputs,
        GenerationParameters(
            do_sample=params.do_sample,
            max_new_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_k=params.top_k,
            top_p=params.top_p,
            typical_p=params.typical_p,
            repetition_penalty=params.repetition_penalty,
            frequency_penalty=params.frequency_penalty,
            seed=params.seed,
            stop=tuple(params.stop),
            truncate=params.truncate,
            return_full_text=params.return_full_text,
            details=params.details,
            decoder_input_details=params.decoder_input_details,
            top_n_tokens=params.top_n_tokens,
            best_of=params.best_of,
            watermark=params.watermark,
            ignore_eos=params.ignore_eos,
            grammar=Grammar(params.grammar.type, params.grammar.value) if params.grammar else None,
        ),
    )


def _stream_event(
    token: GeneratedToken, body: GenerateRequest, validated: ValidatedRequest
) -> dict[str, object]:
    event = StreamResponse(
        index=token.index,
        token=_wire_token(token),
        generated_text=None,
        details=None,
    )
    if validated.sampling.top_n_tokens > 0:
        event.top_tokens = [_wire_token(top) for top in token.top_tokens]
    if token.finish_reason is not None:
        text = token.generated_text
        event.generated_text = _full_text(body, text)
        if body.parameters.details:
            event.details = StreamDetails(
                finish_reason=token.finish_reason.value,
                generated_tokens=token.index,
                seed=validated.sampling.seed,
                input_length=len(validated.prompt_token_ids),
            )
    return event.model_dump(exclude_unset=True)


def _details(tokens: list[GeneratedToken], validated: ValidatedRequest) -> Details:
    finish_reason = tokens[-1].finish_reason
    assert finish_reason is not None  # generate_tokens ends with the finishing token
    details = Details(
        finish_reason=finish_reason.value,
        generated_tokens=len(tokens),
        seed=validated.sampling.seed,
        prefill=[
            PrefillToken(id=p.token_id, text=p.text, logprob=p.logprob)
            for p in tokens[0].prompt_tokens
        ],
        tokens=[_wire_token(token) for token in tokens],
    )
    if validated.sampling.top_n_tokens > 0:
        details.top_tokens = [[_wire_token(top) for top in t.top_tokens] for t in tokens]
    return details


def _wire_token(token: GeneratedToken | TopToken) -> Token:
    return Token(
        id=token.token_id, text=token.text, logprob=token.logprob, special=token.is_special
    )


def _error_response(state: ServingState, error: SluiceError) -> JSONResponse:
    state.metrics.observe_failure(error)
    return JSONResponse(error_body(error), status_code=status_for(error))
