"""One request's life on the API side: validate, submit, and turn engine outputs into tokens
with text. Both the streaming and the non-streaming routes consume `generate_tokens`."""

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from sluice.frontend.detokenizer import IncrementalDetokenizer
from sluice.frontend.engine_client import EngineClient
from sluice.frontend.input_processor import ValidatedRequest
from sluice.ipc.messages import FinishReason


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
    """All non-special text so far."""


async def generate_tokens(
    client: EngineClient, tokenizer: PreTrainedTokenizerBase, request: ValidatedRequest
) -> AsyncIterator[GeneratedToken]:
    detokenizer = IncrementalDetokenizer(tokenizer, request.prompt_token_ids)
    index = 0
    outputs = client.generate(uuid.uuid4().hex, request.prompt_token_ids, request.sampling)
    async with contextlib.aclosing(outputs):
        async for output in outputs:
            for position, (token_id, logprob) in enumerate(
                zip(output.token_ids, output.logprobs, strict=True)
            ):
                is_last = output.finish_reason is not None and position == len(output.token_ids) - 1
                decoded = detokenizer.add(token_id, is_last=is_last)
                index += 1
                yield GeneratedToken(
                    index=index,
                    token_id=token_id,
                    text=decoded.text,
                    logprob=logprob,
                    is_special=decoded.is_special,
                    finish_reason=output.finish_reason if is_last else None,
                    generated_text=detokenizer.text,
                )
