"""TGI's `grammar` against a real server: JSON schema (object, string, json_object and
json_schema forms) and regex outputs follow their grammar, streamed or not; rule 17's
messages; constrained and free requests in one batch, where the free ones keep their solo
greedy outputs; and `--disable-grammar-support`."""

import concurrent.futures
import json
import re
from typing import Any

import httpx
import pytest

from tests.e2e.server import SluiceServer, stream_events

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
ANSWER = {"properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
ANSWER_PROMPT = CHAT.format("Is water wet? Answer in JSON.")


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


def test_grammar_json_output_follows_the_schema(server: SluiceServer) -> None:
    grammar = {"type": "json", "value": PERSON}
    result = _generate(server.url, PERSON_PROMPT, max_new_tokens=80, grammar=grammar)

    assert result["details"]["finish_reason"] == "eos_token"
    _check_person(result["generated_text"])


@pytest.mark.parametrize(
    "grammar",
    [
        {"type": "json", "value": json.dumps(ANSWER)},
        {"type": "json_object", "value": ANSWER},
        {"type": "json_schema", "value": {"name": "answer", "schema": ANSWER, "strict": True}},
    ],
    ids=["json-string", "json_object", "json_schema"],
)
def test_grammar_json_forms(server: SluiceServer, grammar: Any) -> None:
    result = _generate(server.url, ANSWER_PROMPT, max_new_tokens=20, grammar=grammar)

    assert result["details"]["finish_reason"] == "eos_token"
    _check_answer(result["generated_text"])


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


def _check_answer(text: str) -> None:
    assert list(json.loads(text).items()) in ([("ok", True)], [("ok", False)])


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


FREE_PROMPTS = [CHAT.format(q) for q in ("What is a sluice?", "Why is the sky blue?")]


def _free(url: str, prompt: str) -> str:
    text: str = _generate(url, prompt, max_new_tokens=16)["generated_text"]
    return text


def _constrained(url: str, grammar: dict[str, Any], prompt: str) -> str:
    text: str = _generate(url, prompt, max_new_tokens=20, grammar=grammar)["generated_text"]
    return text


def test_grammar_mixed_batch_leaves_free_requests_as_alone(fp32_server: SluiceServer) -> None:
    url = fp32_server.url
    alone = [_free(url, prompt) for prompt in FREE_PROMPTS]
    json_grammar = {"type": "json", "value": ANSWER}
    regex_grammar = {"type": "regex", "value": PHONE}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        free = [pool.submit(_free, url, prompt) for prompt in FREE_PROMPTS]
        answer = pool.submit(_constrained, url, json_grammar, ANSWER_PROMPT)
        phone = pool.submit(_constrained, url, regex_grammar, CHAT.format("A phone number?"))
        together = [f.result() for f in free]

    assert together == alone
    _check_answer(answer.result())
    assert re.fullmatch(PHONE, phone.result())


def test_grammar_refused_with_disable_grammar_support(options_server: SluiceServer) -> None:
    body = {
        "inputs": "hello",
        "parameters": {"max_new_tokens": 5, "grammar": {"type": "json", "value": PERSON}},
    }
    response = httpx.post(f"{options_server.url}/generate", json=body, timeout=60)
    assert response.status_code == 422
    assert response.json()["error"] == "Input validation error: grammar is not supported"
    plain = {"inputs": "hello", "parameters": {"max_new_tokens": 5}}
    assert httpx.post(f"{options_server.url}/generate", json=plain, timeout=60).is_success
