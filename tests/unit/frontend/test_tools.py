"""Tools: tool_choice selection, TGI's `$functions` grammar, parsing and streaming a call."""

import json

import pytest

from sluice.errors import ToolError
from sluice.frontend.chat_prompt import ChatInputs, prepare_chat_prompt
from sluice.frontend.chat_template import ChatMessage, ChatTemplate
from sluice.frontend.tools import (
    NO_TOOL,
    Tool,
    ToolCallDelta,
    ToolCallStream,
    ToolChoice,
    ToolChoiceKind,
    grammar_schema,
    json_object_end,
    next_tool_call_id,
    parse_tool_call,
    select_tools,
)

WEATHER = Tool(
    name="get_weather",
    description="Get the weather",
    parameters={
        "type": "object",
        "properties": {
            "location": {"type": "string"},
            "format": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["location", "format"],
    },
)
TIME = Tool(name="get_time", parameters={"type": "object", "properties": {}})


def test_tools_grammar_is_tgi_functions_schema() -> None:
    assert grammar_schema([WEATHER]) == {
        "$functions": {
            "get_weather": {
                "description": "Get the weather",
                "additionalProperties": False,
                "properties": {
                    "_name": {"type": "string", "const": "get_weather"},
                    "location": {"type": "string"},
                    "format": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["_name", "location", "format"],
            }
        },
        "properties": {"function": {"anyOf": [{"$ref": "#/$functions/get_weather"}]}},
    }


def test_tools_auto_adds_no_tool() -> None:
    selection = select_tools([WEATHER, TIME], ToolChoice())
    assert selection is not None
    assert selection.tools == (WEATHER, TIME, NO_TOOL)
    functions = selection.grammar["$functions"]
    assert isinstance(functions, dict)
    assert list(functions) == ["get_weather", "get_time", "no_tool"]


def test_tools_required_allows_every_tool_without_no_tool() -> None:
    selection = select_tools([WEATHER, TIME], ToolChoice(ToolChoiceKind.REQUIRED))
    assert selection is not None and selection.tools == (WEATHER, TIME)


def test_tools_named_choice_allows_only_that_tool() -> None:
    selection = select_tools([WEATHER, TIME], ToolChoice.from_string("get_weather"))
    assert selection is not None and selection.tools == (WEATHER,)


def test_tools_unknown_choice_is_a_tool_error() -> None:
    with pytest.raises(ToolError) as caught:
        select_tools([WEATHER], ToolChoice.from_string("get_stock"))
    assert str(caught.value) == "Tool error: Tool with name get_stock not found"


def test_tools_none_choice_means_no_tools() -> None:
    assert select_tools([WEATHER], ToolChoice.from_string("none")) is None


def test_tools_and_response_format_are_mutually_exclusive() -> None:
    chat = ChatInputs((ChatMessage("user", "hi"),), tools=(), has_response_format=True)
    with pytest.raises(ToolError, match="^Tool error: Grammar and tools are mutually exclusive$"):
        prepare_chat_prompt(ChatTemplate(None, None, None), chat)


def test_tools_prompt_gets_default_tool_prompt() -> None:
    template = ChatTemplate("{{ messages[-1].content }}", None, None)
    chat = ChatInputs((ChatMessage("user", "hi"),), tools=(TIME,), tool_prompt="")
    prompt = prepare_chat_prompt(template, chat)
    assert prompt.tools is not None
    assert prompt.text.startswith("hi\n---\n[")
    assert prompt.text.endswith("Do not use variables.\n")
    assert '"name":"no_tool"' in prompt.text


def test_tools_parse_call_into_openai_arguments() -> None:
    call = parse_tool_call('{"function": {"_name": "get_weather", "location": "Paris", "n": 2}}')
    assert (call.name, call.arguments) == ("get_weather", '{"location":"Paris","n":2}')
    assert not call.is_no_tool


def test_tools_parse_ignores_text_after_the_call() -> None:
    call = parse_tool_call('{"function": {"_name": "no_tool"}}\nmore')
    assert call.is_no_tool


def test_tools_parse_failure_is_a_tool_error() -> None:
    with pytest.raises(ToolError, match="^Tool error: Failed to parse generated text: "):
        parse_tool_call('{"function": {"_name": "get_weather", "loc')
    with pytest.raises(ToolError, match="missing field `function`"):
        parse_tool_call('{"name": "get_weather"}')


def test_tools_json_object_end_skips_braces_in_strings() -> None:
    text = '{"a": "}{\\"}", "b": [1, {"c": 2}]} tail'
    assert json_object_end(text) == len(text) - len(" tail")
    assert json_object_end('{"a": {') is None


def test_tools_stream_matches_tgi_deltas() -> None:
    stream = ToolCallStream()
    pieces = ['{"', "function", '":', ' {"', "_", "name", '":', ' "', "get", "_weather", '",']
    pieces += [' "', "location", '":', ' "', "San", " Francisco", '",', ' "', "format"]
    pieces += ['":', ' "', "c", "elsius", '"}}', "<junk>"]
    deltas = [stream.push(piece) for piece in pieces]
    assert deltas[:10] == [None] * 10
    sent = [delta for delta in deltas if delta is not None]
    assert sent[0] == ToolCallDelta(name="get_weather", arguments="{")
    assert all(delta.name is None for delta in sent[1:])
    arguments = "".join(delta.arguments for delta in sent)
    assert arguments == '{ "location": "San Francisco", "format": "celsius"}'
    assert json.loads(arguments) == {"location": "San Francisco", "format": "celsius"}
    assert stream.is_complete and deltas[-1] is None


def test_tools_stream_from_forced_prefix_and_empty_arguments() -> None:
    stream = ToolCallStream('{"function": {"_name": "get_time"')
    assert stream.push("}") == ToolCallDelta(name="get_time", arguments="{}")
    assert stream.push("}") is None
    assert stream.is_complete


def test_tools_stream_detects_no_tool() -> None:
    stream = ToolCallStream('{"function": {"_name": "')
    assert stream.push("no_tool") is None
    assert stream.push('", "content": "hi"}}') is None
    assert stream.chose_no_tool


def test_tools_next_call_id_follows_the_conversation() -> None:
    assert next_tool_call_id([]) == "0"
    assert next_tool_call_id(["0", "4"]) == "5"
    assert len(next_tool_call_id(["call_abc"])) == 36


def test_tools_stream_keeps_grammar_whitespace_and_drops_only_the_wrapper_brace() -> None:
    stream = ToolCallStream()
    pieces = ['{"function": {"_name": "get_weather", ', '"location": "Paris"', " }", " }"]
    sent = [delta for piece in pieces if (delta := stream.push(piece)) is not None]
    arguments = "".join(delta.arguments for delta in sent)
    assert arguments == '{ "location": "Paris" } '
    assert json.loads(arguments) == {"location": "Paris"}
    assert stream.is_complete
