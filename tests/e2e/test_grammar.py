"""TGI's `grammar` against a real server: JSON schema (object, string, json_object and
json_schema forms) and regex outputs follow their grammar, streamed or not; rule 17's
messages; constrained and free requests in one batch, where the free ones keep their solo
greedy outputs; and `--disable-grammar-support`."""

import concurrent.futures
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.server import SluiceServer, running_server, stream_events

CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer"},
        "city": {"type": "string", "maxLength": 20},
    },
    "required": ["name", "age", "city"],
}
PERSON_PROMPT = CHAT.format("Describe a person living in Paris as JSON with name, age and city.")
PHONE = r"[0-9]{3}-[0-9]{4}"


def _generate(url: str, inputs: str, **parameters: Any) -> dict[str, Any]:
    body = {"inputs": inputs, "parameters": {"details": True, **parameters}}
    response = httpx.post(f"{url}/generate", json=body, timeout=120)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _check_person(text: str) -> None:
    """What jsonschema would check for PERSON (it is not a dependency)."""
    person = json.loads(text)
    assert list(person) == ["name", "age", "city"]  # only its properties, in schema order
    assert isinstance(person["name"], str) and len(person["name"]) <= 20
    assert isinstance(person["age"], int) and not isinstance(person["age"], bool)
    assert isinstance(person["city"], str) and len(person["city"]) <= 20


@pytest.mark.parametrize(
    "grammar",
    [
        {"type": "json", "value": PERSON},
        {"type": "json", "value": json.dumps(PERSON)},
        {"type": "json_object", "value": PERSON},
        {"type": "json_schema", "value": {"name": "person", "schema": PERSON, "strict": True}},
    ],
    ids=["json", "json-string", "json_object", "json_schema"],
)
def test_grammar_json_output_follows_the_schema(server: SluiceServer, grammar: Any) -> None:
    result = _generate(server.url, PERSON_PROMPT, max_new_tokens=80, grammar=grammar)

    assert result["details"]["finish_reason"] == "eos_token"
    _check_person(result["generated_text"])


def test_grammar_regex_output_matches_whole(server: SluiceServer) -> None:
    prompt = CHAT.format("Make up a phone number.")
    grammar = {"type": "regex", "value": PHONE}

    result = _generate(server.url, prompt, max_new_tokens=20, grammar=grammar)

    assert re.fullmatch(PHONE, result["generated_text"])
    assert result["details"]["finish_reason"] == "eos_token"
    assert result["details"]["tokens"][-1]["special"]  # ended with EOS once the match was whole


def test_grammar_streamed_tokens_follow_it(server: SluiceServer) -> None:
    body = {
        "inputs": PERSON_PROMPT,
        "parameters": {"max_new_tokens": 80, "grammar": {"type": "json", "value": PERSON}},
    }
    with httpx.Client() as client:
        events = stream_events(client, server.url, body)

    text = "".join(e["token"]["text"] for e in events if not e["token"]["special"])
    assert text == events[-1]["generated_text"]
    _check_person(text)


@pytest.mark.parametrize(
    ("grammar", "message"),
    [
        ({"type": "json", "value": 5}, "grammar is not supported"),
        (
            {"type": "json", "value": {"type": "object"}},
            "grammar is not valid: Grammar must have a 'properties' field",
        ),
        (
            {"type": "regex", "value": "(("},
            "grammar is not valid: regex parse error: unclosed group",
        ),
    ],
)
def test_grammar_rejections(server: SluiceServer, grammar: Any, message: str) -> None:
    body = {"inputs": "hello", "parameters": {"grammar": grammar}}
    response = httpx.post(f"{server.url}/generate", json=body, timeout=60)
    assert response.status_code == 422
    assert response.json() == {
        "error": f"Input validation error: {message}",
        "error_type": "validation",
    }


FREE_PROMPTS = [
    CHAT.format(question)
    for question in ("What is a sluice?", "Why is the sky blue?", "Name a river in Europe.")
]


def _free(url: str, prompt: str) -> str:
    text: str = _generate(url, prompt, max_new_tokens=24)["generated_text"]
    return text


def _constrained(url: str, kind: str) -> str:
    if kind == "json":
        return str(
            _generate(
                url,
                PERSON_PROMPT,
                max_new_tokens=80,
                grammar={"type": "json", "value": PERSON},
            )["generated_text"]
        )
    grammar = {"type": "regex", "value": PHONE}
    return str(_generate(url, CHAT.format("A phone number?"), grammar=grammar)["generated_text"])


def test_grammar_mixed_batch_leaves_free_requests_as_alone(fp32_server: SluiceServer) -> None:
    url = fp32_server.url
    alone = [_free(url, prompt) for prompt in FREE_PROMPTS]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        free = [pool.submit(_free, url, prompt) for prompt in FREE_PROMPTS]
        constrained = [pool.submit(_constrained, url, kind) for kind in ("json", "regex", "json")]
        together = [f.result() for f in free]
        json_a, phone, json_b = (f.result() for f in constrained)

    assert together == alone
    _check_person(json_a)
    _check_person(json_b)
    assert re.fullmatch(PHONE, phone)


@pytest.fixture(scope="module")
def no_grammar_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SluiceServer]:
    yield from running_server(
        tmp_path_factory.mktemp("server"), "no-grammar", ("--disable-grammar-support",)
    )


def test_grammar_refused_with_disable_grammar_support(no_grammar_server: SluiceServer) -> None:
    body = {
        "inputs": "hello",
        "parameters": {"max_new_tokens": 5, "grammar": {"type": "json", "value": PERSON}},
    }
    response = httpx.post(f"{no_grammar_server.url}/generate", json=body, timeout=60)
    assert response.status_code == 422
    assert response.json()["error"] == "Input validation error: grammar is not supported"
    plain = {"inputs": "hello", "parameters": {"max_new_tokens": 5}}
    assert httpx.post(f"{no_grammar_server.url}/generate", json=plain, timeout=60).is_success
