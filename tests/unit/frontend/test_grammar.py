"""TGI's `grammar` parameter: rule 17's messages, the three forms and the json_object alias,
`--disable-grammar-support`, and where rule 17 sits in the validation order."""

import json

import pytest
from transformers import PreTrainedTokenizerBase

from sluice.config import ApiConfig, ServingLimits
from sluice.errors import ValidationError
from sluice.frontend.grammar import Grammar, grammar_spec
from sluice.frontend.input_processor import GenerationParameters, InputProcessor
from sluice.sampling_params import JsonSchemaGrammar, RegexGrammar

PERSON = {"properties": {"name": {"type": "string"}}, "required": ["name"]}


def _message(grammar: Grammar) -> str:
    with pytest.raises(ValidationError) as raised:
        grammar_spec(grammar)
    return str(raised.value).removeprefix("Input validation error: ")


@pytest.mark.parametrize("kind", ["json", "json_object"])
def test_grammar_json_schema_as_object_or_string(kind: str) -> None:
    expected = JsonSchemaGrammar(json.dumps(PERSON))
    assert grammar_spec(Grammar(kind, PERSON)) == expected
    assert grammar_spec(Grammar(kind, json.dumps(PERSON))) == expected


def test_grammar_json_schema_form_takes_its_schema_and_ignores_the_rest() -> None:
    value = {"name": "person", "schema": PERSON, "strict": True}
    assert grammar_spec(Grammar("json_schema", value)) == JsonSchemaGrammar(json.dumps(PERSON))


def test_grammar_regex() -> None:
    assert grammar_spec(Grammar("regex", "[0-9]{3}-[a-z]+")) == RegexGrammar("[0-9]{3}-[a-z]+")


@pytest.mark.parametrize(
    ("grammar", "message"),
    [
        (Grammar("json", 5), "grammar is not supported"),
        (Grammar("json", [PERSON]), "grammar is not supported"),
        (Grammar("json", None), "grammar is not supported"),
        (
            Grammar("json", "{bad"),
            "grammar is not valid: Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1)",
        ),
        (
            Grammar("json", {"type": "object"}),
            "grammar is not valid: Grammar must have a 'properties' field",
        ),
        (Grammar("json", "true"), "grammar is not valid: Grammar must have a 'properties' field"),
        (Grammar("json", "[1]"), 'grammar is not valid: [1] is not of types "boolean", "object"'),
        (
            Grammar("json", {"type": 5, "properties": {}}),
            "grammar is not valid: type must be a string or array of strings",
        ),
        (  # an invalid schema is reported before missing properties, as in TGI
            Grammar("json", {"type": 5}),
            "grammar is not valid: type must be a string or array of strings",
        ),
        (
            Grammar("json", {"properties": {"a": {"type": "string", "pattern": "(("}}}),
            "grammar is not valid: regex parse error: unclosed group",
        ),
        (
            Grammar("json_schema", {"name": "x", "schema": {"type": "object"}}),
            "grammar is not valid: Grammar must have a 'properties' field",
        ),
        (Grammar("json_schema", {"name": "x"}), "grammar is not valid: missing field `schema`"),
        (
            Grammar("json_schema", json.dumps({"schema": PERSON})),
            "grammar is not valid: missing field `schema`",
        ),
        (Grammar("regex", "(("), "grammar is not valid: regex parse error: unclosed group"),
        (
            Grammar("regex", 5),
            "grammar is not valid: a regex grammar's value must be a string",
        ),
        (
            Grammar("yaml", ""),
            "grammar is not valid: unknown type `yaml`, "
            "expected one of json, json_object, json_schema, regex",
        ),
    ],
)
def test_grammar_rejections_use_tgi_messages(grammar: Grammar, message: str) -> None:
    assert _message(grammar) == message


def _processor(tokenizer: PreTrainedTokenizerBase, **api: object) -> InputProcessor:
    limits = ServingLimits(
        max_input_tokens=10,
        max_total_tokens=20,
        max_batch_prefill_tokens=4096,
        max_batch_total_tokens=4096,
        block_size=16,
        num_kv_blocks=256,
    )
    return InputProcessor(tokenizer, limits, (2,), ApiConfig(**api))  # type: ignore[arg-type]


def test_grammar_reaches_the_sampling_params(tokenizer: PreTrainedTokenizerBase) -> None:
    params = GenerationParameters(grammar=Grammar("regex", "[a-z]+"), max_new_tokens=5)
    validated = _processor(tokenizer).process("hello", params)
    assert validated.sampling.grammar == RegexGrammar("[a-z]+")
    assert _processor(tokenizer).process("hello", GenerationParameters()).sampling.grammar is None


def test_grammar_refused_when_support_is_disabled(tokenizer: PreTrainedTokenizerBase) -> None:
    processor = _processor(tokenizer, disable_grammar_support=True)
    params = GenerationParameters(grammar=Grammar("json", PERSON), max_new_tokens=5)
    with pytest.raises(ValidationError, match="^Input validation error: grammar is not supported$"):
        processor.process("hello", params)
    assert (
        processor.process("hello", GenerationParameters(max_new_tokens=5)).sampling.grammar is None
    )


def test_grammar_is_checked_after_the_length_rules(tokenizer: PreTrainedTokenizerBase) -> None:
    """Rule 17 comes after rules 15 and 16: a too long request reports its length first."""
    params = GenerationParameters(grammar=Grammar("json", 5), max_new_tokens=50)
    with pytest.raises(ValidationError, match="`inputs` tokens \\+ `max_new_tokens` must be"):
        _processor(tokenizer).process("hello", params)
    with pytest.raises(ValidationError, match="grammar is not supported"):
        _processor(tokenizer).process("hello", GenerationParameters(grammar=Grammar("json", 5)))
