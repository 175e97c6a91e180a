"""Writes a GrammarSpec in the grammar format of llguidance, the constrained-decoding library,
and checks it: the one place that knows that format, shared by the frontend (which refuses a
grammar that cannot compile) and the engine (which builds a matcher per request from it)."""

import json
from typing import Any

import llguidance

from sluice.sampling_params import GrammarSpec, JsonSchemaGrammar, RegexGrammar

JSON_WHITESPACE = "[ ]?"
"""Whitespace allowed between JSON tokens: at most one space, as TGI's outlines-core default.
A small model given free whitespace can fill its whole budget with newlines."""


def llguidance_grammar(spec: GrammarSpec) -> str:
    """The grammar for llguidance's matcher. Raises ValueError when a schema is not JSON."""
    match spec:
        case JsonSchemaGrammar(schema=schema):
            return llguidance.LLMatcher.grammar_from_json_schema(
                as_tgi_reads_it(json.loads(schema)),
                defaults={"whitespace_pattern": JSON_WHITESPACE},
            )
        case RegexGrammar(pattern=pattern):
            return llguidance.LLMatcher.grammar_from_regex(pattern)


SUBSCHEMA_KEYS = (
    "additionalItems", "additionalProperties", "contains", "else", "if", "items", "not",
    "propertyNames", "then", "unevaluatedItems", "unevaluatedProperties",
)  # fmt: skip
SUBSCHEMA_LIST_KEYS = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
SUBSCHEMA_MAP_KEYS = (
    "$defs", "definitions", "dependentSchemas", "patternProperties", "properties",
    "$functions",  # where TGI's tool grammar keeps one schema per function
)  # fmt: skip
OBJECT_KEYWORDS = ("additionalProperties", "patternProperties", "unevaluatedProperties")


def as_tgi_reads_it(schema: Any) -> Any:
    """The schema with TGI's reading made explicit, at every level: a schema with `properties`
    is an object (to JSON Schema, `{"properties": ...}` also admits `5`), and such an object
    has only the properties it lists unless it says otherwise (TGI's outlines-core never
    generates others). A JSON value made of dicts and lists; returns a new one."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in SUBSCHEMA_KEYS:
        if isinstance(out.get(key), dict):
            out[key] = as_tgi_reads_it(out[key])
    for key in SUBSCHEMA_LIST_KEYS:
        if isinstance(out.get(key), list):
            out[key] = [as_tgi_reads_it(item) for item in out[key]]
    for key in SUBSCHEMA_MAP_KEYS:
        if isinstance(out.get(key), dict):
            out[key] = {name: as_tgi_reads_it(sub) for name, sub in out[key].items()}
    if isinstance(out.get("properties"), dict):
        out.setdefault("type", "object")
        if not any(key in out for key in OBJECT_KEYWORDS):
            out["additionalProperties"] = False
    return out


def grammar_error(spec: GrammarSpec) -> str | None:
    """Why `spec` cannot be compiled, in one line per problem; None when it can."""
    try:
        grammar = llguidance_grammar(spec)
    except ValueError as error:
        return str(error)
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if not is_error:
        return None
    return _one_line(messages[0])


def _one_line(message: str) -> str:
    """llguidance's regex errors span lines: the grammar line it compiled (`   1 | start: ...`),
    its own rule name, and the regex parser's drawing of where it failed. Keep one line a
    client can act on: `regex parse error: unclosed group`."""
    message = message.split("\n   1 | ", 1)[0].split(" (in regex): ", 1)[-1].strip()
    lines = message.splitlines()
    reasons = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    if len(lines) > 1 and reasons:
        return f"{lines[0]} {reasons[-1]}"
    return " ".join(line.strip() for line in lines)
