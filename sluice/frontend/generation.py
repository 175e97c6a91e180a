"""One request's life on the API side: submit it, turn engine outputs into tokens with text,
and end it on a stop string. Every route consumes `generate_tokens`."""

import contextlib
import math
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from sluice.frontend.detokenizer import IncrementalDetokenizer
from sluice.frontend.engine_client import EngineClient
from sluice.frontend.input_processor import ValidatedRequest
from sluice.frontend.stop_checker import StopChecker
from sluice.ipc.messages import FinishReason, RequestOutput


@dataclass(frozen=True, slots=True)
class TopToken:
    token_id: int
    text: str
    """The token decoded on its own, as TGI does."""
    logprob: float
    is_special: bool


@dataclass(frozen=True, slots=True)
class PromptToken:
    token_id: int
    text: str
    """The token decoded on its own, as TGI does."""
    logprob: float | None
    """None for the first token (nothing predicts it) and where the engine could not tell."""


@dataclass(frozen=True, slots=True)
class GeneratedToken:
    index: int
    """1-based position in the output."""
    token_id: int
    text: str
    logprob: float
    is_special: bool
    finish_reason: FinishReason | None
    """Set on the last token."""
    generated_text: str
    """All non-special text so far (cut right after a matched stop string)."""
    top_tokens: tuple[TopToken, ...] = ()
    """The most likely alternatives at this position, when `top_n_tokens` asked for them."""
    prompt_tokens: tuple[PromptToken, ...] = ()
    """On the first token only: every prompt token with its logprob, when the request asked
    for prompt logprobs (`SamplingParams.prompt_logprobs`)."""
    queue_s: float | None = None
    """On the first token only: seconds the request waited in the engine's queue."""


async def generate_tokens(
    client: EngineClient, tokenizer: PreTrainedTokenizerBase, request: ValidatedRequest
) -> AsyncIterator[GeneratedToken]:
    """Yield each generated token; the last one carries the finish reason. Leaving early
    (client gone) or matching a stop string aborts the request in the engine."""
    detokenizer = IncrementalDetokenizer(tokenizer, request.prompt_token_ids)
    stop_checker = StopChecker(request.stop)
    index = 0
    outputs = client.generate(uuid.uuid4().hex, request.prompt_token_ids, request.sampling)
    async with contextlib.aclosing(outputs):
        async for output in outputs:
            pairs = list(zip(output.token_ids, output.logprobs, strict=True))
            for position, (token_id, logprob) in enumerate(pairs):
                is_last = output.finish_reason is not None and position == len(pairs) - 1
                decoded = detokenizer.add(token_id, is_last=is_last)
                text, finish_reason = decoded.text, output.finish_reason if is_last else None
                stop_end = stop_checker.find(detokenizer.text, len(text))
                if stop_end is not None:
                    cut = len(detokenizer.text) - stop_end
                    text = text[: len(text) - cut]
                    finish_reason = FinishReason.STOP_SEQUENCE
                yield GeneratedToken(
                    index=index + 1,
                    token_id=token_id,
                    text=text,
                    logprob=logprob,
                    is_special=decoded.is_special,
                    finish_reason=finish_reason,
                    generated_text=detokenizer.text[: stop_end or len(detokenizer.text)],
                    top_tokens=_top_tokens(tokenizer, detokenizer, output, position),
                    prompt_tokens=_prompt_tokens(tokenizer, request, output) if index == 0 else (),
                    queue_s=output.queue_s if index == 0 else None,
                )
                index += 1
                if finish_reason is not None:
                    return


def _top_tokens(
    tokenizer: PreTrainedTokenizerBase,
    detokenizer: IncrementalDetokenizer,
    output: RequestOutput,
    position: int,
) -> tuple[TopToken, ...]:
    if not output.top_token_ids:
        return ()
    token_ids = output.top_token_ids[position]
    texts = _decode_each(tokenizer, token_ids)
    return tuple(
        TopToken(token_id, text, logprob, detokenizer.is_special(token_id))
        for token_id, text, logprob in zip(
            token_ids, texts, output.top_logprobs[position], strict=True
        )
    )


def _prompt_tokens(
    tokenizer: PreTrainedTokenizerBase, request: ValidatedRequest, output: RequestOutput
) -> tuple[PromptToken, ...]:
    if not request.sampling.prompt_logprobs:
        return ()
    token_ids = request.prompt_token_ids
    texts = _decode_each(tokenizer, token_ids)
    logprobs = [None, *(None if math.isnan(value) else value for value in output.prompt_logprobs)]
    if len(logprobs) != len(token_ids):  # the engine sent none: every logprob is unknown
        logprobs = [None] * len(token_ids)
    return tuple(
        PromptToken(token_id, text, logprob)
        for token_id, text, logprob in zip(token_ids, texts, logprobs, strict=True)
    )


def _decode_each(tokenizer: PreTrainedTokenizerBase, token_ids: list[int]) -> list[str]:
    """Each token decoded on its own, special tokens literally (TGI's top and prefill texts)."""
    texts: list[str] = tokenizer.batch_decode(
        [[token_id] for token_id in token_ids],
        skip_special_tokens=False,
        clean_up_tokenization_spaces=False,
    )
    return texts
