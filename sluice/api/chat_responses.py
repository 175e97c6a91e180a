"""Builds /v1/chat/completions bodies and stream chunks from generated tokens, in TGI's shape:
`id` "", `eos_token` reported as "stop" (`length` and `stop_sequence` unchanged), every chunk's
delta repeating `"role": "assistant"`, and special tokens streamed as empty content."""

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sluice import __version__
from sluice.api.openai_schemas import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatLogprobs,
    ChunkChoice,
    DeltaFunction,
    DeltaToolCall,
    OutputFunction,
    OutputToolCall,
    TextDelta,
    TextMessage,
    TokenLogprob,
    ToolCallMessage,
    ToolCallsDelta,
    TopLogprob,
    Usage,
)
from sluice.frontend.generation import GeneratedToken
from sluice.frontend.tools import ParsedToolCall, ToolCallDelta
from sluice.ipc.messages import FinishReason

ROLE = "assistant"
SYSTEM_FINGERPRINT = f"{__version__}-native"
"""`<version>-<docker label>`; sluice has no docker label, so TGI's "native"."""


def chat_finish_reason(reason: FinishReason) -> str:
    return "stop" if reason is FinishReason.EOS_TOKEN else reason.value


def usage(num_prompt_tokens: int, num_generated_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=num_prompt_tokens,
        completion_tokens=num_generated_tokens,
        total_tokens=num_prompt_tokens + num_generated_tokens,
    )


def logprobs(tokens: Sequence[GeneratedToken]) -> ChatLogprobs:
    return ChatLogprobs(
        content=[
            TokenLogprob(
                token=token.text,
                logprob=token.logprob,
                top_logprobs=[
                    TopLogprob(token=t.text, logprob=t.logprob) for t in token.top_tokens
                ],
            )
            for token in tokens
        ]
    )


@dataclass(frozen=True, slots=True)
class ChatReplyShape:
    """What every body and chunk of one reply shares."""

    model: str
    with_logprobs: bool
    tool_call_id: str = "0"

    def completion(
        self,
        tokens: Sequence[GeneratedToken],
        finish_reason: str,
        num_prompt_tokens: int,
        tool_call: ParsedToolCall | None = None,
    ) -> ChatCompletion:
        message: TextMessage | ToolCallMessage
        if tool_call is None:
            message = TextMessage(role=ROLE, content=tokens[-1].generated_text if tokens else "")
        else:
            function = OutputFunction(
                description=None, name=tool_call.name, arguments=tool_call.arguments
            )
            call = OutputToolCall(id="0", type="function", function=function)
            message = ToolCallMessage(role=ROLE, tool_calls=[call])
        choice = ChatChoice(
            index=0,
            message=message,
            logprobs=logprobs(tokens) if self.with_logprobs else None,
            finish_reason=finish_reason,
        )
        return ChatCompletion(
            id="",
            created=int(time.time()),
            model=self.model,
            system_fingerprint=SYSTEM_FINGERPRINT,
            choices=[choice],
            usage=usage(num_prompt_tokens, len(tokens)),
        )

    def text_chunk(self, token: GeneratedToken) -> ChatCompletionChunk:
        content = "" if token.is_special else token.text
        return self._chunk(TextDelta(role=ROLE, content=content), token, token.finish_reason)

    def tool_chunk(
        self,
        delta: ToolCallDelta,
        token: GeneratedToken | None,
        finish_reason: FinishReason | None,
    ) -> ChatCompletionChunk:
        call = DeltaToolCall(
            index=0,
            id=self.tool_call_id,
            type="function",
            function=DeltaFunction(name=delta.name, arguments=delta.arguments),
        )
        return self._chunk(ToolCallsDelta(role=ROLE, tool_calls=[call]), token, finish_reason)

    def finish_chunk(
        self, finish_reason: FinishReason | None, *, is_tool_call: bool
    ) -> ChatCompletionChunk:
        """The end of a stream whose last token added nothing to the answer."""
        if is_tool_call:
            return self.tool_chunk(ToolCallDelta(name=None, arguments=""), None, finish_reason)
        return self._chunk(TextDelta(role=ROLE, content=""), None, finish_reason)

    def usage_chunk(self, num_prompt_tokens: int, num_generated_tokens: int) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id="",
            created=int(time.time()),
            model=self.model,
            system_fingerprint=SYSTEM_FINGERPRINT,
            choices=[],
            usage=usage(num_prompt_tokens, num_generated_tokens),
        )

    def _chunk(
        self,
        delta: TextDelta | ToolCallsDelta,
        token: GeneratedToken | None,
        finish_reason: FinishReason | None,
    ) -> ChatCompletionChunk:
        choice = ChunkChoice(
            index=0,
            delta=delta,
            logprobs=logprobs([token]) if self.with_logprobs and token is not None else None,
            finish_reason=None if finish_reason is None else chat_finish_reason(finish_reason),
        )
        return ChatCompletionChunk(
            id="",
            created=int(time.time()),
            model=self.model,
            system_fingerprint=SYSTEM_FINGERPRINT,
            choices=[choice],
            usage=None,
        )
