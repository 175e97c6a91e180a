"""GrammarSpec -> llguidance: TGI's reading of a schema made explicit, and compile errors as
one line a client can act on."""

import pytest

from sluice.grammars import as_tgi_reads_it, grammar_error
from sluice.sampling_params import GrammarSpec, JsonSchemaGrammar, RegexGrammar


def test_grammars_schema_with_properties_is_a_closed_object_at_every_level() -> None:
    schema = {
        "properties": {
            "properties": {"properties": {"x": {"type": "integer"}}},  # a property so named
            "tags": {"type": "array", "items": {"properties": {"y": {}}}},
        },
        "$defs": {"open": {"properties": {}, "additionalProperties": True}},
        "anyOf": [{"properties": {}}, {"type": "string"}],
    }
    closed = {"type": "object", "additionalProperties": False}
    assert as_tgi_reads_it(schema) == {
        "properties": {
            "properties": {"properties": {"x": {"type": "integer"}}, **closed},
            "tags": {"type": "array", "items": {"properties": {"y": {}}, **closed}},
        },
        "$defs": {"open": {"properties": {}, "additionalProperties": True, "type": "object"}},
        "anyOf": [{"properties": {}, **closed}, {"type": "string"}],
        **closed,
    }


def test_grammars_schema_reading_keeps_what_the_schema_says() -> None:
    schema = {"type": ["object", "null"], "properties": {}, "patternProperties": {"^x": {}}}
    assert as_tgi_reads_it(schema) == schema
    assert as_tgi_reads_it({"type": "string"}) == {"type": "string"}


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        (JsonSchemaGrammar('{"properties": {"a": {"type": "integer"}}}'), None),
        (RegexGrammar("[0-9]{3}-[a-z]+"), None),
        (RegexGrammar("(("), "regex parse error: unclosed group"),
        (
            RegexGrammar("[z-a]"),
            "regex parse error: invalid character class range, the start must be <= the end",
        ),
        (
            JsonSchemaGrammar('{"properties": {}, "type": 5}'),
            "type must be a string or array of strings",
        ),
    ],
)
def test_grammars_error_is_one_line(spec: GrammarSpec, error: str | None) -> None:
    assert grammar_error(spec) == error
