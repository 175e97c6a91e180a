"""Maps OpenAI request bodies onto the frontend's chat inputs and TGI's native generation
parameters (contract 6.10, 1.7): temperature 0 means greedy, anything else (or nothing) samples;
presence_penalty + 2 becomes repetition_penalty; top_logprobs becomes top_n_tokens;
response_format becomes the grammar."""

from sluice.api.openai_schemas import (
    ChatRequest,
    CompletionRequest,
    FunctionChoice,
    Message,
    TextChunk,
)
from sluice.frontend.chat_prompt import ChatInputs
from sluice.frontend.chat_template import ChatMessage, ContentPart, ImagePart, TextPart
from sluice.frontend.grammar import Grammar
from sluice.frontend.input_processor import GenerationParameters
from sluice.frontend.tools import Tool, ToolCall, ToolChoice, ToolChoiceKind


def served_model_name(requested: str | None, model_id: str) -> str:
    """The `model` a chat response echoes: the request's, unless absent or "tgi"."""
    return model_id if requested in (None, "tgi") else requested


def chat_inputs(body: ChatRequest) -> ChatInputs:
    tools = None
    if body.tools is not None:
        tools = tuple(
            Tool(
                name=tool.function.name,
                parameters=tool.function.arguments,
                description=tool.function.description,
                type=tool.type,
            )
            for tool in body.tools
        )
    return ChatInputs(
        messages=tuple(_chat_message(message) for message in body.messages),
        tools=tools,
        tool_choice=_tool_choice(body.tool_choice),
        tool_prompt=body.tool_prompt,
        has_response_format=body.response_format is not None,
    )


def chat_parameters(body: ChatRequest) -> GenerationParameters:
    do_sample, temperature = _sampling(body.temperature)
    presence = body.presence_penalty
    return GenerationParameters(
        do_sample=do_sample,
        max_new_tokens=body.max_tokens,
        temperature=temperature,
        top_p=body.top_p,
        repetition_penalty=None if presence is None else presence + 2.0,
        frequency_penalty=body.frequency_penalty,
        seed=body.seed,
        stop=tuple(body.stop or ()),
        details=True,
        top_n_tokens=body.top_logprobs,
        add_special_tokens=False,
        grammar=(
            None
            if body.response_format is None
            else Grammar(body.response_format.type, body.response_format.value)
        ),
    )


def completion_parameters(body: CompletionRequest) -> GenerationParameters:
    do_sample, temperature = _sampling(body.temperature)
    return GenerationParameters(
        do_sample=do_sample,
        max_new_tokens=body.max_tokens,
        temperature=temperature,
        top_p=body.top_p,
        repetition_penalty=body.repetition_penalty,
        frequency_penalty=body.frequency_penalty,
        seed=body.seed,
        stop=tuple(body.stop or ()),
        details=True,
        ignore_eos=body.ignore_eos,
    )


def _sampling(temperature: float | None) -> tuple[bool, float | None]:
    """TGI: exactly 0 is greedy with no temperature; otherwise sample (at 1.0 when unset)."""
    if temperature == 0.0:
        return False, None
    return True, temperature


def _chat_message(message: Message) -> ChatMessage:
    content: str | tuple[ContentPart, ...] | None
    if message.content is None or isinstance(message.content, str):
        content = message.content
    else:
        content = tuple(
            TextPart(chunk.text) if isinstance(chunk, TextChunk) else ImagePart(chunk.image_url.url)
            for chunk in message.content
        )
    calls = tuple(
        ToolCall(
            id=call.id,
            name=call.function.name,
            arguments=call.function.arguments,
            description=call.function.description,
            type=call.type,
        )
        for call in message.tool_calls or ()
    )
    return ChatMessage(role=message.role, content=content, tool_calls=calls)


def _tool_choice(choice: str | FunctionChoice | None) -> ToolChoice:
    if choice is None:
        return ToolChoice()
    if isinstance(choice, FunctionChoice):
        return ToolChoice(ToolChoiceKind.FUNCTION, choice.function.name)
    return ToolChoice.from_string(choice)
