"""ChatTemplate: TGI's rendering rules (ChatML, helpers, tools, continue-final-message, errors)."""

import datetime

import pytest
from transformers import PreTrainedTokenizerBase

from sluice.errors import TemplateError
from sluice.frontend.chat_template import (
    ChatMessage,
    ChatTemplate,
    ImagePart,
    TextPart,
    ToolPrompt,
)
from sluice.frontend.tools import Tool, ToolCall

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
WEATHER = Tool(
    name="get_weather",
    description="Get the weather",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)


def _chatml() -> ChatTemplate:
    return ChatTemplate(CHATML, bos_token="<s>", eos_token="</s>")


def test_chat_template_renders_chatml_with_generation_prompt() -> None:
    rendered = _chatml().render([ChatMessage("system", "Be brief."), ChatMessage("user", "Hi!")])
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_chat_template_default_model_adds_its_system_prompt(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    template = ChatTemplate.from_tokenizer(tokenizer)
    rendered = template.render([ChatMessage("user", "hi")])
    assert rendered.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert rendered.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def test_chat_template_passes_bos_and_eos_tokens() -> None:
    template = ChatTemplate(
        "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}", "<s>", "</s>"
    )
    assert template.render([ChatMessage("user", "x")]) == "<s>x</s>"


def test_chat_template_missing_bos_renders_empty() -> None:
    template = ChatTemplate("[{{ bos_token }}]{{ messages[0].content }}", None, None)
    assert template.render([ChatMessage("user", "x")]) == "[]x"


def test_chat_template_flattens_content_parts_and_images() -> None:
    message = ChatMessage(
        "user", (TextPart("What is "), ImagePart("http://x/a.png"), TextPart("?"))
    )
    assert message.flattened() == "What is ![](http://x/a.png)?"


def test_chat_template_renders_tool_calls_as_their_json() -> None:
    call = ToolCall(id="7", name="get_weather", arguments={"city": "Paris"})
    message = ChatMessage("assistant", None, (call,))
    assert message.flattened() == (
        '[{"id":"7","type":"function","function":{"description":null,"name":"get_weather",'
        '"arguments":"{\\"city\\":\\"Paris\\"}"}}]'
    )


def test_chat_template_raise_exception_is_a_template_error() -> None:
    template = ChatTemplate("{{ raise_exception('Roles must alternate') }}", None, None)
    with pytest.raises(TemplateError) as caught:
        template.render([ChatMessage("user", "x")])
    assert str(caught.value) == "Template error: syntax error: Roles must alternate"
    assert caught.value.error_type == "template_error"


def test_chat_template_strftime_now_formats_local_time() -> None:
    template = ChatTemplate("{{ strftime_now('%Y') }}", None, None)
    assert template.render([]) == str(datetime.datetime.now().year)


def test_chat_template_continues_a_final_assistant_message() -> None:
    messages = [ChatMessage("user", "Count to 3"), ChatMessage("assistant", "1, 2,  ")]
    rendered = _chatml().render(messages)
    assert rendered.endswith("<|im_start|>assistant\n1, 2,")


def test_chat_template_missing_template_is_an_error() -> None:
    with pytest.raises(TemplateError, match="^Template error: template not found$"):
        ChatTemplate(None, None, None).render([ChatMessage("user", "x")])


def test_chat_template_syntax_error_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match="syntax error"):
        ChatTemplate("{% for %}", None, None).render([ChatMessage("user", "x")])


def test_chat_template_is_sandboxed() -> None:
    template = ChatTemplate("{{ ''.__class__.__mro__ }}", None, None)
    with pytest.raises(TemplateError):
        template.render([])


def test_chat_template_without_tools_variable_gets_tools_in_last_message() -> None:
    tools = ToolPrompt((WEATHER,), "Call a tool.")
    rendered = _chatml().render([ChatMessage("user", "Weather?")], tools)
    assert (
        "Weather?\n---\n"
        '[{"type":"function","function":{"description":"Get the weather","name":"get_weather",'
        '"arguments":"{\\"type\\":\\"object\\",\\"properties\\":{\\"city\\":{\\"type\\":\\"string\\"}}}"}}]'
        "\nCall a tool.<|im_end|>"
    ) in rendered


def test_chat_template_with_tools_variable_lists_them_itself() -> None:
    source = "{% for tool in tools %}{{ tool.function.name }}:{{ tool.function.arguments }}|"
    source += "{% endfor %}{{ messages[-1].content }}"
    template = ChatTemplate(source, None, None)
    assert template.lists_tools
    rendered = template.render([ChatMessage("user", "Weather?")], ToolPrompt((WEATHER,), "Go."))
    assert rendered == (
        'get_weather:{"type":"object","properties":{"city":{"type":"string"}}}|Weather?\n---\nGo.'
    )


def test_chat_template_tojson_is_minijinja_compact_sorted_and_html_safe() -> None:
    template = ChatTemplate("{{ {'b': '<x>', 'a': 1} | tojson }}", None, None)
    assert template.render([]) == '{"a":1,"b":"\\u003cx\\u003e"}'


def test_chat_template_keeps_blocks_whitespace_like_minijinja() -> None:
    template = ChatTemplate("{% if true %}\nA{% endif %}\n", None, None)
    assert template.render([]) == "\nA"
