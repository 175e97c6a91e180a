"""Request and response bodies of the OpenAI-compatible routes, shaped as TGI serves them
(contract 1.6-1.8, 1.12): TGI's field names, aliases, defaults and key order.

pydantic validates untrusted JSON here and gives the OpenAPI schema; nothing below `api/`
sees these models."""

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, Field, RootModel, model_validator

U32 = Annotated[int, Field(ge=0, lt=2**32)]
U64 = Annotated[int, Field(ge=0, lt=2**64)]


class TextChunk(BaseModel):
    type: Literal["text"]
    text: str


class ImageUrl(BaseModel):
    url: str


class ImageUrlChunk(BaseModel):
    type: Literal["image_url"]
    image_url: ImageUrl


MessageChunk = Annotated[TextChunk | ImageUrlChunk, Field(discriminator="type")]


class FunctionDefinition(BaseModel):
    name: str
    description: str | None = None
    arguments: Any = Field(validation_alias=AliasChoices("arguments", "parameters"))
    """The function's JSON schema (OpenAI's `parameters`); in a past call, its arguments."""


class Tool(BaseModel):
    type: str = Field(examples=["function"])
    function: FunctionDefinition


class ToolCall(BaseModel):
    id: str
    type: str = "function"
    function: FunctionDefinition


class Message(BaseModel):
    role: str = Field(examples=["user"])
    content: str | list[MessageChunk] | None = None
    tool_calls: list[ToolCall] | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _has_content_or_tool_calls(self) -> "Message":
        if self.content is None and self.tool_calls is None:
            raise ValueError("a message needs `content` or `tool_calls`")
        return self


class FunctionName(BaseModel):
    name: str


class FunctionChoice(BaseModel):
    type: Literal["function"]
    function: FunctionName


class StreamOptions(BaseModel):
    include_usage: bool


class ResponseFormat(BaseModel):
    """TGI's grammar object (`{"type": ..., "value": ...}`), not OpenAI's nested shape."""

    type: Literal["json", "json_object", "json_schema", "regex"]
    value: Any


class ChatRequest(BaseModel):
    messages: list[Message]
    model: str | None = Field(None, examples=["tgi"])
    frequency_penalty: float | None = None
    logit_bias: list[float] | None = Field(None, description="Accepted and ignored, as in TGI.")
    logprobs: bool | None = None
    top_logprobs: U32 | None = None
    max_tokens: U32 | None = Field(
        None, validation_alias=AliasChoices("max_tokens", "max_completion_tokens")
    )
    n: U32 | None = Field(None, description="Ignored: there is always one choice.")
    presence_penalty: float | None = None
    stop: list[str] | None = None
    stream: bool = False
    seed: U64 | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[Tool] | None = None
    tool_prompt: str | None = None
    tool_choice: str | FunctionChoice | None = None
    response_format: ResponseFormat | None = None
    stream_options: StreamOptions | None = None


class CompletionRequest(BaseModel):
    prompt: str | list[str]
    model: str | None = None
    max_tokens: U32 | None = None
    temperature: float | None = None
    top_p: float | None = None
    stream: bool = False
    seed: U64 | None = None
    suffix: str | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: list[str] | None = None
    ignore_eos: bool = Field(
        False,
        description="sluice extension for benchmarks (vLLM's field of the same name): generate "
        "max_tokens, EOS or not",
    )

    @model_validator(mode="after")
    def _prompt_not_empty(self) -> "CompletionRequest":
        if isinstance(self.prompt, list) and not self.prompt:
            raise ValueError("Empty array detected. Do not use an empty array for the prompt.")
        return self


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TopLogprob(BaseModel):
    token: str
    logprob: float


class TokenLogprob(BaseModel):
    token: str
    logprob: float
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob]


class OutputFunction(BaseModel):
    description: str | None
    name: str
    arguments: str
    """A JSON object, as a string."""


class OutputToolCall(BaseModel):
    id: str
    type: str
    function: OutputFunction


class TextMessage(BaseModel):
    role: str
    content: str


class ToolCallMessage(BaseModel):
    role: str
    tool_calls: list[OutputToolCall]


class ChatChoice(BaseModel):
    index: int
    message: TextMessage | ToolCallMessage
    logprobs: ChatLogprobs | None
    finish_reason: str


class ChatCompletion(BaseModel):
    object: Literal["chat.completion"] = "chat.completion"
    id: str
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: Usage


class DeltaFunction(BaseModel):
    name: str | None
    arguments: str


class DeltaToolCall(BaseModel):
    index: int
    id: str
    type: str
    function: DeltaFunction


class TextDelta(BaseModel):
    role: str
    content: str


class ToolCallsDelta(BaseModel):
    role: str
    tool_calls: list[DeltaToolCall]


class ChunkChoice(BaseModel):
    index: int
    delta: TextDelta | ToolCallsDelta
    logprobs: ChatLogprobs | None
    finish_reason: str | None


class ChatCompletionChunk(BaseModel):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    id: str
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChunkChoice]
    usage: Usage | None


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: None = None
    finish_reason: str


class Completion(BaseModel):
    """A whole non-streamed response, and the last chunk of each prompt in a stream."""

    object: Literal["text_completion"] = "text_completion"
    id: str
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
    usage: Usage


class CompletionChunk(BaseModel):
    """A streamed token that does not end its prompt: no `usage` key, `finish_reason` ""."""

    object: Literal["text_completion"] = "text_completion"
    id: str
    created: int
    choices: list[CompletionChoice]
    model: str
    system_fingerprint: str


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


class SimpleToken(BaseModel):
    id: int
    text: str
    start: int
    """Byte offset of the token's first byte in `inputs`."""
    stop: int


class TokenizeResponse(RootModel[list[SimpleToken]]):
    pass


class ChatTokenizeResponse(BaseModel):
    tokenize_response: list[SimpleToken]
    templated_text: str
