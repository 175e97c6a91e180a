"""Renders a conversation into a prompt with the model's chat template, as TGI's minijinja
setup does (contract 6.11): a sandboxed Jinja environment, the variables `messages` (content
flattened to strings), `bos_token`, `eos_token`, `add_generation_prompt=True` and `tools`, the
helpers `raise_exception` and `strftime_now`, and the continue-final-message rule. It does not
use transformers' apply_chat_template, whose variables and whitespace rules differ."""

import datetime
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import jinja2
import jinja2.ext
import jinja2.meta
import jinja2.sandbox
from transformers import PreTrainedTokenizerBase

from sluice.errors import TemplateError
from sluice.frontend.tools import (
    JsonValue,
    Tool,
    ToolCall,
    compact_json,
    tool_as_json,
    tool_call_as_json,
    tool_prompt_suffix,
)

TEMPLATE_PATCHES: Final = (
    ("messages[0]['content'][0]['text']", "messages[0]['content']"),
    ("{% generation %}", ""),
    ("{% endgeneration %}", ""),
)
"""TGI's rewrites for templates written for structured content or training-time markers."""

_HTML_ESCAPES: Final = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "'": "\\u0027"}


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    url: str


ContentPart = TextPart | ImagePart


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str | tuple[ContentPart, ...] | None = None
    """None for an assistant message that only carries `tool_calls`."""
    tool_calls: tuple[ToolCall, ...] = ()

    def flattened(self) -> str:
        """The one string a template sees: text parts joined, images as markdown, and a
        content-less tool-call message as the JSON of its calls."""
        if self.content is None:
            return compact_json([tool_call_as_json(call) for call in self.tool_calls])
        if isinstance(self.content, str):
            return self.content
        return "".join(
            part.text if isinstance(part, TextPart) else f"![]({part.url})" for part in self.content
        )


@dataclass(frozen=True, slots=True)
class ToolPrompt:
    """Tools to put in the prompt, and the instruction that follows them."""

    tools: tuple[Tool, ...]
    instruction: str


class _TemplateRaised(Exception):
    """A template's own `raise_exception(message)`."""


@dataclass(frozen=True, slots=True)
class _CompiledTemplate:
    template: jinja2.Template
    lists_tools: bool
    """The template reads `tools`; otherwise the tools go into the last message as JSON."""


class ChatTemplate:
    def __init__(self, source: str | None, bos_token: str | None, eos_token: str | None) -> None:
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token

    @classmethod
    def from_tokenizer(cls, tokenizer: PreTrainedTokenizerBase) -> "ChatTemplate":
        """The template transformers loaded (chat_template.jinja/.json or tokenizer_config);
        of several named templates, the one named `default`."""
        source = tokenizer.chat_template
        if isinstance(source, Mapping):
            source = source.get("default")
        bos, eos = tokenizer.bos_token, tokenizer.eos_token
        return cls(
            source if isinstance(source, str) else None,
            bos if isinstance(bos, str) else None,
            eos if isinstance(eos, str) else None,
        )

    @property
    def lists_tools(self) -> bool:
        return self._compiled().lists_tools

    def render(self, messages: Sequence[ChatMessage], tools: ToolPrompt | None = None) -> str:
        """The prompt, ending with the assistant's turn; TemplateError if it cannot render."""
        compiled = self._compiled()
        contents = [message.flattened() for message in messages]
        if tools is not None and messages and messages[-1].content is not None:
            contents[-1] += tool_prompt_suffix(
                tools.tools, tools.instruction, template_lists_tools=compiled.lists_tools
            )
        context: dict[str, object] = {
            "messages": [
                {"content": content, "role": message.role}
                for message, content in zip(messages, contents, strict=True)
            ],
            "add_generation_prompt": True,
        }
        # An absent token stays undefined (renders empty) rather than rendering "None".
        if self.bos_token is not None:
            context["bos_token"] = self.bos_token
        if self.eos_token is not None:
            context["eos_token"] = self.eos_token
        if tools is not None:
            context["tools"] = [_sorted_keys(tool_as_json(tool)) for tool in tools.tools]
        rendered = _render(compiled.template, context)
        if messages and messages[-1].role == "assistant":
            return _continue_final_message(rendered, contents[-1])
        return rendered

    def _compiled(self) -> "_CompiledTemplate":
        if self.source is None:
            raise TemplateError("template not found")
        return _compile(self.source)


def _continue_final_message(rendered: str, final_content: str) -> str:
    """Cut the prompt right after the last assistant message, so the model continues it."""
    index = rendered.rfind(final_content)
    if index == -1:
        return rendered
    return rendered[: index + len(final_content)].rstrip()


def _render(template: jinja2.Template, context: dict[str, object]) -> str:
    try:
        return template.render(context)
    except _TemplateRaised as error:
        raise TemplateError(f"syntax error: {error}") from error
    except jinja2.UndefinedError as error:
        raise TemplateError(f"undefined value: {error}") from error
    except Exception as error:  # a template is untrusted code: any failure is the request's
        raise TemplateError(f"invalid operation: {error}") from error


@functools.lru_cache(maxsize=8)
def _compile(source: str) -> _CompiledTemplate:
    """Compiled once per template text (a model has one; tests make a few)."""
    for old, new in TEMPLATE_PATCHES:
        source = source.replace(old, new)
    environment = _environment()
    try:
        parsed = environment.parse(source)
        template = environment.from_string(source)
    except jinja2.TemplateSyntaxError as error:
        raise TemplateError(f"syntax error: {error.message}") from error
    lists_tools = "tools" in jinja2.meta.find_undeclared_variables(parsed)
    return _CompiledTemplate(template, lists_tools)


def _environment() -> jinja2.sandbox.ImmutableSandboxedEnvironment:
    # minijinja's defaults, which TGI keeps: no trim_blocks, no lstrip_blocks.
    environment = jinja2.sandbox.ImmutableSandboxedEnvironment(extensions=[jinja2.ext.loopcontrols])
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = _strftime_now
    environment.filters["tojson"] = _tojson
    return environment


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(message)


def _strftime_now(format_string: str) -> str:
    return datetime.datetime.now().strftime(format_string)


def _tojson(value: object, indent: int | bool | None = None) -> str:
    """minijinja's `tojson`: keys sorted, compact (or indented), safe to embed in HTML."""
    spaces = 2 if indent is True else (indent or None)
    separators = (",", ": ") if spaces else (",", ":")
    text = json.dumps(
        value, ensure_ascii=False, sort_keys=True, indent=spaces, separators=separators
    )
    for char, escaped in _HTML_ESCAPES.items():
        text = text.replace(char, escaped)
    return text


def _sorted_keys(value: JsonValue) -> JsonValue:
    """Objects with their keys in order, as minijinja's maps iterate them (items(), tojson)."""
    if isinstance(value, dict):
        return {key: _sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(item) for item in value]
    return value
