"""Turns a chat request's conversation, tools and response format into the native prompt, in
TGI's order of checks (`prepare_chat_input`): grammar and tools exclude each other, then
`tool_choice` is applied, then the template renders."""

from dataclasses import dataclass, replace

from sluice.errors import ToolError
from sluice.frontend.chat_template import ChatMessage, ChatTemplate, ToolPrompt
from sluice.frontend.tools import (
    DEFAULT_TOOL_PROMPT,
    Tool,
    ToolChoice,
    ToolSelection,
    next_tool_call_id,
    select_tools,
)


@dataclass(frozen=True, slots=True)
class ChatInputs:
    messages: tuple[ChatMessage, ...]
    tools: tuple[Tool, ...] | None = None
    """None when the request has no `tools` key; `()` for `tools: []`."""
    tool_choice: ToolChoice = ToolChoice()
    tool_prompt: str | None = None
    has_response_format: bool = False

    def without_tools(self) -> "ChatInputs":
        """The same chat as an ordinary one: what TGI re-runs when the model picks no_tool."""
        return replace(self, tools=None, has_response_format=False)

    def next_tool_call_id(self) -> str:
        return next_tool_call_id(
            [call.id for message in self.messages for call in message.tool_calls]
        )


@dataclass(frozen=True, slots=True)
class ChatPrompt:
    text: str
    """The rendered template: the native request's `inputs`."""
    tools: ToolSelection | None = None
    """Set when the model must answer with a tool call."""


def prepare_chat_prompt(template: ChatTemplate, chat: ChatInputs) -> ChatPrompt:
    """TemplateError or ToolError (both HTTP 422) when the chat cannot become a prompt."""
    if chat.has_response_format and chat.tools is not None:
        raise ToolError("Grammar and tools are mutually exclusive")
    selection = None
    if chat.tools is not None and not chat.has_response_format:
        selection = select_tools(chat.tools, chat.tool_choice)
    if selection is None:
        return ChatPrompt(template.render(chat.messages))
    instruction = chat.tool_prompt or DEFAULT_TOOL_PROMPT
    text = template.render(chat.messages, ToolPrompt(selection.tools, instruction))
    return ChatPrompt(text, selection)
