"""Tool calling as TGI does it (contract 6.12, 6.13): which tools a request may call, the JSON
schema grammar that constrains the model to one call, the text injected into the prompt, and
turning the generated JSON `{"function": {"_name": ..., <arguments>}}` into a tool call, whole or
streamed. Knows nothing about chat templates or HTTP.

A *tool call* is one function name plus its arguments; TGI allows one per response. `no_tool` is
the synthetic function that `tool_choice: auto` adds: the model picking it means "answer in
text", and the caller re-runs the request without tools."""

import enum
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from sluice.errors import ToolError

JsonValue: TypeAlias = dict[str, "JsonValue"] | list["JsonValue"] | str | int | float | bool | None

DEFAULT_TOOL_PROMPT: Final = (
    "\nGiven the functions available, please respond with a JSON for a function call with its "
    "proper arguments that best answers the given prompt. Respond in the format {name: function "
    "name, parameters: dictionary of argument name and its value}.Do not use variables.\n"
)
"""TGI's built-in `tool_prompt`, used when the request sends none or an empty one."""

_NAME_PATTERN: Final = re.compile(
    r'\s*\{\s*"function"\s*:\s*\{\s*"_name"\s*:\s*"((?:[^"\\]|\\.)*)"'
)


@dataclass(frozen=True, slots=True)
class Tool:
    """One function the client offers (`tools[i].function`)."""

    name: str
    parameters: JsonValue
    """The function's JSON schema, as sent (`parameters`, or TGI's alias `arguments`)."""
    description: str | None = None
    type: str = "function"


NO_TOOL: Final = Tool(
    name="no_tool",
    description="Open ended response with no specific tool selected",
    parameters={"type": "object"},
)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call already in the conversation (an assistant message's `tool_calls[i]`)."""

    id: str
    name: str
    arguments: JsonValue
    description: str | None = None
    type: str = "function"


class ToolChoiceKind(enum.StrEnum):
    AUTO = "auto"
    NONE = "none"
    REQUIRED = "required"
    FUNCTION = "function"


@dataclass(frozen=True, slots=True)
class ToolChoice:
    kind: ToolChoiceKind = ToolChoiceKind.AUTO
    function_name: str | None = None
    """Set when `kind` is FUNCTION."""

    @classmethod
    def from_string(cls, value: str) -> "ToolChoice":
        """TGI reads any string other than auto/none/required as a function name."""
        if value in (ToolChoiceKind.AUTO, ToolChoiceKind.NONE, ToolChoiceKind.REQUIRED):
            return cls(ToolChoiceKind(value))
        return cls(ToolChoiceKind.FUNCTION, value)


@dataclass(frozen=True, slots=True)
class ToolSelection:
    """The tools a request may call, and the grammar that holds the model to them."""

    tools: tuple[Tool, ...]
    """Every client tool (plus `no_tool` for auto), or the one the request names."""
    grammar: dict[str, JsonValue]
    """TGI's `$functions` JSON schema: the `json` grammar the answer is generated under."""


def select_tools(tools: Sequence[Tool], choice: ToolChoice) -> ToolSelection | None:
    """Apply `tool_choice`; None means an ordinary chat (`none`, or nothing to call)."""
    allowed: tuple[Tool, ...]
    match choice.kind:
        case ToolChoiceKind.NONE:
            return None
        case ToolChoiceKind.FUNCTION:
            named = [tool for tool in tools if tool.name == choice.function_name]
            if not named:
                raise ToolError(f"Tool with name {choice.function_name} not found")
            allowed = (named[0],)
        case ToolChoiceKind.REQUIRED:
            allowed = tuple(tools)
        case ToolChoiceKind.AUTO:
            allowed = (*tools, NO_TOOL)
    if not allowed:
        return None
    return ToolSelection(tools=allowed, grammar=grammar_schema(allowed))


def grammar_schema(tools: Sequence[Tool]) -> dict[str, JsonValue]:
    """`{"$functions": {name: schema}, "properties": {"function": {"anyOf": [$refs]}}}`: each
    function's schema requires a `_name` constant plus that function's own parameters."""
    functions: dict[str, JsonValue] = {tool.name: _function_schema(tool) for tool in tools}
    refs: list[JsonValue] = [{"$ref": f"#/$functions/{tool.name}"} for tool in tools]
    return {"$functions": functions, "properties": {"function": {"anyOf": refs}}}


def _function_schema(tool: Tool) -> dict[str, JsonValue]:
    schema: dict[str, JsonValue] = {"description": tool.description or ""}
    properties: dict[str, JsonValue] = {"_name": {"type": "string", "const": tool.name}}
    required: list[JsonValue] = ["_name"]
    if isinstance(tool.parameters, dict):
        if isinstance(given := tool.parameters.get("properties"), dict):
            properties.update(given)
        if isinstance(given_required := tool.parameters.get("required"), list):
            required.extend(given_required)
        # TGI's check: only the string "true" turns additional properties on.
        schema["additionalProperties"] = tool.parameters.get("additionalProperties") == "true"
    schema["properties"] = properties
    schema["required"] = required
    return schema


def compact_json(value: JsonValue) -> str:
    """JSON as TGI's serde_json writes it: no spaces, keys in their given order."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def tool_as_json(tool: Tool) -> dict[str, JsonValue]:
    """A tool as TGI serialises it, for the prompt: `arguments` holds the schema as a string."""
    function: dict[str, JsonValue] = {
        "description": tool.description,
        "name": tool.name,
        "arguments": compact_json(tool.parameters),
    }
    return {"type": tool.type, "function": function}


def tool_call_as_json(call: ToolCall) -> dict[str, JsonValue]:
    function: dict[str, JsonValue] = {
        "description": call.description,
        "name": call.name,
        "arguments": compact_json(call.arguments),
    }
    return {"id": call.id, "type": call.type, "function": function}


def tool_prompt_suffix(
    tools: Sequence[Tool], tool_prompt: str, *, template_lists_tools: bool
) -> str:
    """Text appended to the last message: the tools as JSON unless the template lists them."""
    if template_lists_tools:
        return f"\n---\n{tool_prompt}"
    return f"\n---\n{compact_json([tool_as_json(tool) for tool in tools])}\n{tool_prompt}"


def next_tool_call_id(existing_ids: Sequence[str]) -> str:
    """`0`, one past the largest numeric id in the conversation, or a UUID for other ids."""
    if not existing_ids:
        return "0"
    try:
        return str(max(int(call_id) for call_id in existing_ids) + 1)
    except ValueError:
        return str(uuid.uuid4())


def json_object_end(text: str) -> int | None:
    """Offset just past the JSON object that `text` starts with, once it is closed."""
    depth = 0
    in_string = is_escaped = False
    for offset, char in enumerate(text):
        if in_string:
            if is_escaped:
                is_escaped = False
            elif char == "\\":
                is_escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return offset + 1
    return None


@dataclass(frozen=True, slots=True)
class ParsedToolCall:
    name: str
    arguments: str
    """The call's arguments as a compact JSON object string (OpenAI's `arguments`)."""

    @property
    def is_no_tool(self) -> bool:
        return self.name == NO_TOOL.name


def parse_tool_call(text: str) -> ParsedToolCall:
    """The call in a complete generated text; ToolError with TGI's wording if it is not one."""
    end = json_object_end(text)
    try:
        value = json.loads(text if end is None else text[:end])
    except json.JSONDecodeError as error:
        raise ToolError(f"Failed to parse generated text: {error} {json.dumps(text)}") from error
    function = value.get("function") if isinstance(value, dict) else None
    if not isinstance(function, dict):
        raise ToolError(
            f"Failed to parse generated text: missing field `function` {json.dumps(text)}"
        )
    name = function.get("_name")
    if not isinstance(name, str):
        raise ToolError(f"Failed to parse generated text: missing field `_name` {json.dumps(text)}")
    arguments = {key: item for key, item in function.items() if key != "_name"}
    return ParsedToolCall(name=name, arguments=compact_json(arguments))


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """One streamed piece of a call: the name comes once, with the opening brace."""

    name: str | None
    arguments: str


class ToolCallStream:
    """Turns the JSON of a call into deltas as its text arrives, as TGI streams it: nothing
    until the function name is known, then `{` and the argument text as generated, without the
    closing brace of the `{"function": ...}` wrapper."""

    def __init__(self, text: str = "") -> None:
        self._text = text
        """Everything generated so far, from the call's opening brace."""
        self._name: str | None = None
        self._arguments_start = 0
        self._num_sent = 0
        self.is_complete = False
        """The call's JSON is closed: nothing after it belongs to the call."""
        self.chose_no_tool = False

    @property
    def name(self) -> str | None:
        """The called function's name, once generated."""
        return self._name

    def push(self, text: str) -> ToolCallDelta | None:
        if self.is_complete or self.chose_no_tool:
            return None
        self._text += text
        end = json_object_end(self._text)
        if end is not None:
            self._text, self.is_complete = self._text[:end], True
        is_first = self._name is None
        if is_first and not self._find_name():
            return None
        arguments = self._arguments()
        delta, self._num_sent = arguments[self._num_sent :], len(arguments)
        if not delta and not is_first:
            return None
        return ToolCallDelta(name=self._name if is_first else None, arguments=delta)

    def _find_name(self) -> bool:
        match = _NAME_PATTERN.match(self._text)
        if match is None:
            return False
        name = json.loads(f'"{match.group(1)}"')
        if name == NO_TOOL.name:
            self.chose_no_tool = True
            return False
        self._name, self._arguments_start = name, match.end()
        return True

    def _arguments(self) -> str:
        """`{` plus what follows the name and its comma; stable once a character is in."""
        rest = self._text[self._arguments_start :]
        stripped = rest.lstrip()
        if not stripped:
            return "{"
        rest = stripped[1:] if stripped.startswith(",") else stripped
        arguments = "{" + rest
        return arguments[:-1] if self.is_complete else arguments
