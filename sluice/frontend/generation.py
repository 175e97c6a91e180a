"""One request's life on the API side: submit it, turn engine outputs into tokens with text,
and end it on a stop string. Every route consumes `generate_tokens`."""

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from sluice.frontend.detokenizer import IncrementalDetokenizer
from sluice.frontend.engine_client import EngineClient
from sluice.frontend.input_processor import ValidatedRequest
from sluice.frontend.stop_checker import StopChecker
from sluice.ipc.messages import FinishReason


@dataclass(frozen=True, slots=True)
class TopToken:
    token_id: int
    text: str
    logprob: float
    is_special: bool


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
                index += 1
                yield GeneratedToken(
                    index=index,
                    token_id=token_id,
                    text=text,
                    logprob=logprob,
                    is_special=decoded.is_special,
                    finish_reason=finish_reason,
                    generated_text=detokenizer.text[: stop_end or len(detokenizer.text)],
                )
                if finish_reason is not None:
                    return
