"""TGI's `grammar` parameter as a client sends it, and its validation (rule 17 of contract 2.3)
into the GrammarSpec the engine constrains decoding with. Messages are TGI's."""

import json
from collections.abc import Mapping
from dataclasses import dataclass

from sluice.errors import ValidationError
from sluice.grammars import grammar_error
from sluice.sampling_params import GrammarSpec, JsonSchemaGrammar, RegexGrammar

JSON_TYPES = ("json", "json_object")
"""`json_object` is an alias of `json`."""
GRAMMAR_TYPES = (*JSON_TYPES, "json_schema", "regex")


@dataclass(frozen=True, slots=True)
class Grammar:
    """TGI's `{"type": ..., "value": ...}` grammar object, as received (parsed JSON values).

    - `json` / `json_object`: `value` is a JSON Schema, as a dict or as a string holding one.
    - `json_schema`: `value` is `{"name"?: str, "schema": dict}` (other keys are ignored).
    - `regex`: `value` is the regex string; generated text must match it whole."""

    type: str
    value: object


def grammar_spec(grammar: Grammar) -> GrammarSpec:
    """Validate `grammar` as TGI does; raises ValidationError with TGI's message."""
    if grammar.type in JSON_TYPES:
        return _json_schema(_parsed(grammar.value))
    if grammar.type == "json_schema":
        value = grammar.value
        if not isinstance(value, Mapping) or "schema" not in value:
            raise ValidationError("grammar is not valid: missing field `schema`")
        return _json_schema(value["schema"])
    if grammar.type == "regex":
        if not isinstance(grammar.value, str):
            raise ValidationError("grammar is not valid: a regex grammar's value must be a string")
        spec = RegexGrammar(grammar.value)
        _check_compiles(spec)
        return spec
    raise ValidationError(
        f"grammar is not valid: unknown type `{grammar.type}`, "
        f"expected one of {', '.join(GRAMMAR_TYPES)}"
    )


def _parsed(value: object) -> object:
    """A `json` value: an object, or a string that parses to one."""
    if isinstance(value, Mapping):
        return value
    if not isinstance(value, str):
        raise ValidationError("grammar is not supported")
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise ValidationError(f"grammar is not valid: {error}") from None


def _json_schema(schema: object) -> JsonSchemaGrammar:
    """A valid schema first, then top-level properties, in TGI's order. TGI requires them: it
    has no free-form "any JSON object" mode (TGI #2899)."""
    no_properties = ValidationError("grammar is not valid: Grammar must have a 'properties' field")
    if isinstance(schema, bool):  # `true` and `false` are valid schemas, without properties
        raise no_properties
    if not isinstance(schema, Mapping):
        raise ValidationError(
            f'grammar is not valid: {json.dumps(schema)} is not of types "boolean", "object"'
        )
    spec = JsonSchemaGrammar(json.dumps(schema))
    _check_compiles(spec)
    if "properties" not in schema:
        raise no_properties
    return spec


def _check_compiles(spec: GrammarSpec) -> None:
    error = grammar_error(spec)
    if error is not None:
        raise ValidationError(f"grammar is not valid: {error}")
