"""/v1/chat/completions, /v1/completions, /v1/models, /tokenize and /chat_tokenize against a
real server, checked against TGI's wire format (contract 1.6-1.8, 1.12, 2.4)."""

import json
from typing import Any

import httpx
import pytest

from tests.e2e.server import SluiceServer, metric_samples

MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
QUESTION = [{"role": "user", "content": "What is a sluice?"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {
                    "type": "string",
                    "description": "The city and state, e.g. San Francisco, CA",
                },
                "format": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location", "format"],
        },
    },
}
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather like in Brooklyn, New York?"}]


def _post(server: SluiceServer, route: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.url + route, json=body, timeout=120)


def _sse(server: SluiceServer, route: str, body: dict[str, Any]) -> list[str]:
    """Every `data:` payload of a stream, raw; the stream must answer 200."""
    with httpx.stream("POST", server.url + route, json=body, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    return [line.removeprefix("data: ") for line in lines]


def _chunks(payloads: list[str]) -> list[dict[str, Any]]:
    assert payloads[-1] == "[DONE]"
    return [json.loads(payload) for payload in payloads[:-1]]


def test_chat_greedy_equals_native_generate(fp32_server: SluiceServer) -> None:
    # float32: the repeat finds the prompt cached; bfloat16 may round its tail differently.
    tokenized = _post(fp32_server, "/chat_tokenize", {"messages": QUESTION}).json()
    templated = tokenized["templated_text"]
    assert templated.endswith(
        "<|im_start|>user\nWhat is a sluice?<|im_end|>\n<|im_start|>assistant\n"
    )
    native_body = {"inputs": templated, "parameters": {"max_new_tokens": 24, "details": True}}
    native = _post(fp32_server, "/generate", native_body).json()
    chat_body = {"model": "tgi", "messages": QUESTION, "max_tokens": 24, "temperature": 0}
    response = _post(fp32_server, "/v1/chat/completions", chat_body)
    assert response.status_code == 200
    chat = response.json()
    assert list(chat) == [
        "object", "id", "created", "model", "system_fingerprint", "choices", "usage"
    ]  # fmt: skip
    assert (chat["object"], chat["id"], chat["model"]) == ("chat.completion", "", MODEL_ID)
    assert chat["system_fingerprint"].endswith("-native")
    choice = chat["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": native["generated_text"]}
    assert choice["logprobs"] is None
    native_reason = native["details"]["finish_reason"]
    assert choice["finish_reason"] == ("stop" if native_reason == "eos_token" else native_reason)
    assert chat["usage"] == {
        "prompt_tokens": len(tokenized["tokenize_response"]),
        "completion_tokens": native["details"]["generated_tokens"],
        "total_tokens": len(tokenized["tokenize_response"]) + native["details"]["generated_tokens"],
    }


def test_chat_stream_concatenates_to_the_content(fp32_server: SluiceServer) -> None:
    # float32: the repeat finds the prompt cached; bfloat16 may round its tail differently.
    body = {"messages": QUESTION, "max_tokens": 16, "temperature": 0, "stream": True}
    chunks = _chunks(_sse(fp32_server, "/v1/chat/completions", body))
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "" for c in chunks)
    assert all(c["usage"] is None for c in chunks)
    assert all(c["choices"][0]["delta"]["role"] == "assistant" for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("length", "stop")
    streamed = "".join(c["choices"][0]["delta"]["content"] for c in chunks)
    whole = _post(fp32_server, "/v1/chat/completions", {**body, "stream": False}).json()
    assert streamed == whole["choices"][0]["message"]["content"]


def test_chat_stream_include_usage_adds_a_usage_chunk(server: SluiceServer) -> None:
    body = {"messages": QUESTION, "max_tokens": 5, "temperature": 0, "stream": True}
    body["stream_options"] = {"include_usage": True}
    chunks = _chunks(_sse(server, "/v1/chat/completions", body))
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 5 == len(chunks) - 1
    usage = chunks[-1]["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + 5


def test_chat_finish_reasons(server: SluiceServer) -> None:
    body: dict[str, Any] = {"messages": QUESTION, "temperature": 0}
    length = _post(server, "/v1/chat/completions", {**body, "max_tokens": 2}).json()
    assert length["choices"][0]["finish_reason"] == "length"
    short = [{"role": "user", "content": "What is 12 times 7? Answer with the number only."}]
    eos_body = {**body, "messages": short, "max_tokens": 200}
    eos = _post(server, "/v1/chat/completions", eos_body).json()
    assert eos["choices"][0]["finish_reason"] == "stop"
    stopped = _post(server, "/v1/chat/completions", {**body, "stop": [" is"]}).json()
    assert stopped["choices"][0]["finish_reason"] == "stop_sequence"
    assert stopped["choices"][0]["message"]["content"].endswith(" is")  # kept, as in TGI


def test_chat_logprobs_per_token(server: SluiceServer) -> None:
    body = {"messages": QUESTION, "max_tokens": 4, "temperature": 0, "logprobs": True}
    chat = _post(server, "/v1/chat/completions", body).json()
    content = chat["choices"][0]["logprobs"]["content"]
    assert len(content) == 4
    assert all(set(entry) == {"token", "logprob", "top_logprobs"} for entry in content)
    assert all(entry["logprob"] <= 0 and entry["top_logprobs"] == [] for entry in content)
    assert "".join(e["token"] for e in content) == chat["choices"][0]["message"]["content"]
    chunks = _chunks(_sse(server, "/v1/chat/completions", {**body, "stream": True}))
    streamed = [c["choices"][0]["logprobs"]["content"][0] for c in chunks]
    assert [e["token"] for e in streamed] == [e["token"] for e in content]
    top = _post(server, "/v1/chat/completions", {**body, "top_logprobs": 2}).json()
    for entry in top["choices"][0]["logprobs"]["content"]:
        assert len(entry["top_logprobs"]) == 2
        assert entry["top_logprobs"][0]["token"] == entry["token"]  # greedy picks the top one
        assert entry["top_logprobs"][0]["logprob"] >= entry["top_logprobs"][1]["logprob"]


def test_chat_presence_penalty_becomes_repetition_penalty(server: SluiceServer) -> None:
    body = {"messages": QUESTION, "max_tokens": 24, "temperature": 0}
    tokenized = _post(server, "/chat_tokenize", {"messages": QUESTION}).json()
    native_body = {
        "inputs": tokenized["templated_text"],
        "parameters": {"max_new_tokens": 24, "repetition_penalty": 2.5},
    }
    native = _post(server, "/generate", native_body).json()["generated_text"]
    chat = _post(server, "/v1/chat/completions", {**body, "presence_penalty": 0.5}).json()
    assert chat["choices"][0]["message"]["content"] == native


def test_chat_model_is_echoed(server: SluiceServer) -> None:
    body = {"messages": QUESTION, "max_tokens": 1, "temperature": 0, "model": "my-model"}
    assert _post(server, "/v1/chat/completions", body).json()["model"] == "my-model"
    del body["model"]
    assert _post(server, "/v1/chat/completions", body).json()["model"] == MODEL_ID


def test_chat_forced_tool_call_round_trip(server: SluiceServer) -> None:
    body = {
        "messages": WEATHER_QUESTION,
        "max_tokens": 60,
        "temperature": 0,
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_current_weather"}},
    }
    chat = _post(server, "/v1/chat/completions", body).json()
    message = chat["choices"][0]["message"]
    assert set(message) == {"role", "tool_calls"}  # no content key, as in TGI
    (call,) = message["tool_calls"]
    assert (call["id"], call["type"]) == ("0", "function")
    assert call["function"]["name"] == "get_current_weather"
    assert call["function"]["description"] is None
    arguments = json.loads(call["function"]["arguments"])
    assert isinstance(arguments["location"], str)
    assert chat["choices"][0]["finish_reason"] == "stop"

    chunks = _chunks(_sse(server, "/v1/chat/completions", {**body, "stream": True}))
    deltas = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks]
    assert deltas[0]["function"]["name"] == "get_current_weather"
    assert all(d["function"]["name"] is None for d in deltas[1:])
    assert all((d["index"], d["id"], d["type"]) == (0, "0", "function") for d in deltas)
    streamed = "".join(d["function"]["arguments"] for d in deltas)
    assert json.loads(streamed) == arguments
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"

    history = [*WEATHER_QUESTION, {"role": "assistant", "tool_calls": message["tool_calls"]}]
    history.append({"role": "tool", "content": "22 degrees", "tool_call_id": "0"})
    follow_up = {"messages": history, "max_tokens": 3, "temperature": 0}
    assert _post(server, "/v1/chat/completions", follow_up).status_code == 200


def _error(response: httpx.Response) -> tuple[int, dict[str, str]]:
    return response.status_code, response.json()


def test_chat_tool_errors(server: SluiceServer) -> None:
    base: dict[str, Any] = {"messages": WEATHER_QUESTION, "tools": [WEATHER_TOOL]}
    both = {**base, "response_format": {"type": "json", "value": {"properties": {}}}}
    assert _error(_post(server, "/v1/chat/completions", both)) == (
        422,
        {
            "error": "Tool error: Grammar and tools are mutually exclusive",
            "error_type": "tool_error",
        },
    )
    assert _error(_post(server, "/v1/chat/completions", {**base, "tool_choice": "nope"})) == (
        422,
        {"error": "Tool error: Tool with name nope not found", "error_type": "tool_error"},
    )
    cut = {**base, "tool_choice": "get_current_weather", "max_tokens": 1, "temperature": 0}
    status, body = _error(_post(server, "/v1/chat/completions", cut))
    assert (status, body["error_type"]) == (422, "tool_error")
    assert body["error"].startswith("Tool error: Failed to parse generated text: ")
    # Errors found before the stream starts are real statuses even with stream: true.
    stream_both = {**both, "stream": True}
    assert _post(server, "/v1/chat/completions", stream_both).status_code == 422


def test_chat_validation_errors(server: SluiceServer) -> None:
    body: dict[str, Any] = {"messages": QUESTION, "max_tokens": 2}
    status, error = _error(_post(server, "/v1/chat/completions", {**body, "top_p": 1.0}))
    assert (status, error) == (
        422,
        {
            "error": "Input validation error: `top_p` must be > 0.0 and < 1.0",
            "error_type": "validation",
        },
    )
    no_properties = {**body, "response_format": {"type": "json", "value": {"type": "object"}}}
    assert _error(_post(server, "/v1/chat/completions", no_properties)) == (
        422,
        {
            "error": "Input validation error: grammar is not valid: "
            "Grammar must have a 'properties' field",
            "error_type": "validation",
        },
    )
    for malformed in ({"logit_bias": {"50256": -100}}, {"stop": "."}, {"messages": "hi"}):
        response = _post(server, "/v1/chat/completions", {**body, **malformed})
        assert response.status_code == 422
        assert response.json()["error"].startswith("Failed to deserialize the JSON body")
    ignored = {**body, "logit_bias": [0.5], "n": 3, "temperature": 0}
    assert len(_post(server, "/v1/chat/completions", ignored).json()["choices"]) == 1


def test_chat_response_format_constrains_the_answer(server: SluiceServer) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    body = {
        "messages": [{"role": "user", "content": "Describe David, 30, as JSON"}],
        "max_tokens": 40,
        "temperature": 0,
        "response_format": {"type": "json_object", "value": schema},
    }
    chat = _post(server, "/v1/chat/completions", body).json()
    answer = json.loads(chat["choices"][0]["message"]["content"])
    assert set(answer) == {"name", "age"} and isinstance(answer["age"], int)
    assert chat["choices"][0]["finish_reason"] == "stop"


def test_chat_stream_errors_are_in_band_then_done(server: SluiceServer) -> None:
    body = {"messages": QUESTION, "max_tokens": 2, "top_p": 1.0, "stream": True}
    payloads = _sse(server, "/v1/chat/completions", body)
    assert payloads == [
        json.dumps(
            {
                "error": {
                    "message": "Input validation error: `top_p` must be > 0.0 and < 1.0",
                    "http_status_code": 422,
                }
            },
            separators=(",", ":"),
        ),
        "[DONE]",
    ]


def test_chat_counts_two_requests_per_call(server: SluiceServer) -> None:
    def count() -> float:
        page = httpx.get(server.url + "/metrics").text
        return metric_samples(page, "tgi_request_count")["tgi_request_count"]

    before = count()
    _post(server, "/v1/chat/completions", {"messages": QUESTION, "max_tokens": 1})
    assert count() - before == 2


def test_completions_several_prompts(server: SluiceServer) -> None:
    prompts = ["The capital of France is", "One, two, three,"]
    body = {"prompt": prompts, "max_tokens": 5, "temperature": 0}
    completion = _post(server, "/v1/completions", body).json()
    assert (completion["object"], completion["id"], completion["model"]) == (
        "text_completion",
        "",
        MODEL_ID,
    )
    choices = sorted(completion["choices"], key=lambda choice: choice["index"])
    assert [c["index"] for c in choices] == [0, 1]
    for prompt, choice in zip(prompts, choices, strict=True):
        native_body = {"inputs": prompt, "parameters": {"max_new_tokens": 5}}
        assert choice["text"] == _post(server, "/generate", native_body).json()["generated_text"]
        assert (choice["logprobs"], choice["finish_reason"]) == (None, "length")
    assert completion["usage"]["completion_tokens"] == 10
    single = _post(server, "/v1/completions", {**body, "prompt": prompts[0]}).json()
    assert single["choices"][0]["text"] == choices[0]["text"]


def test_completions_ignore_eos_generates_max_tokens(server: SluiceServer) -> None:
    """A sluice extension (vLLM's field of the same name), for benchmarks."""
    prompt = "<|im_start|>user\nSay yes.<|im_end|>\n<|im_start|>assistant\n"
    body = {"prompt": prompt, "max_tokens": 40, "temperature": 0}
    stopped = _post(server, "/v1/completions", body).json()
    assert stopped["choices"][0]["finish_reason"] == "stop"
    assert stopped["usage"]["completion_tokens"] < 40

    ignoring = _post(server, "/v1/completions", {**body, "ignore_eos": True}).json()

    assert ignoring["choices"][0]["finish_reason"] == "length"
    assert ignoring["usage"]["completion_tokens"] == 40


def test_completions_stream_interleaves_prompts(server: SluiceServer) -> None:
    body = {"prompt": ["Hello", "The sea"], "max_tokens": 3, "temperature": 0, "stream": True}
    chunks = _chunks(_sse(server, "/v1/completions", body))
    finals = [c for c in chunks if "usage" in c]
    assert sorted(c["choices"][0]["index"] for c in finals) == [0, 1]
    assert all(c["choices"][0]["finish_reason"] == "length" for c in finals)
    assert all(c["usage"]["completion_tokens"] == 3 for c in finals)
    intermediate = [c for c in chunks if "usage" not in c]
    assert len(intermediate) == 4
    assert all(c["choices"][0]["finish_reason"] == "" for c in intermediate)
    assert all(c["object"] == "text_completion" for c in chunks)


def test_completions_errors(server: SluiceServer) -> None:
    suffix = _post(server, "/v1/completions", {"prompt": "a", "suffix": "b"})
    assert _error(suffix) == (
        422,
        {
            "error": "Suffix is not supported and can be achieved by preprocessing the prompt.",
            "error_type": "suffix not supported",
        },
    )
    too_many = _post(server, "/v1/completions", {"prompt": ["a"] * 5, "stream": True})
    assert _error(too_many) == (
        422,
        {
            "error": "Number of prompts exceeds the maximum allowed batch size of 4",
            "error_type": "batch size exceeded",
        },
    )
    assert _post(server, "/v1/completions", {"prompt": []}).status_code == 422
    payloads = _sse(server, "/v1/completions", {"prompt": "a", "top_p": 0, "stream": True})
    assert json.loads(payloads[0])["error"]["http_status_code"] == 422
    assert payloads[-1] == "[DONE]"


def test_models_lists_the_served_model(server: SluiceServer) -> None:
    assert httpx.get(server.url + "/v1/models").json() == {
        "object": "list",
        "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": MODEL_ID}],
    }


def test_tokenize_reports_byte_offsets(server: SluiceServer) -> None:
    text = "Hé llo"
    tokens = _post(server, "/tokenize", {"inputs": text}).json()
    encoded = text.encode()
    assert [t["text"] for t in tokens] == ["H", "é", " l", "lo"]
    assert [(t["start"], t["stop"]) for t in tokens] == [(0, 1), (1, 3), (3, 5), (5, 7)]
    assert all(encoded[t["start"] : t["stop"]].decode() == t["text"] for t in tokens)
    assert all(isinstance(t["id"], int) for t in tokens)


def test_chat_tokenize_shows_the_templated_tools(server: SluiceServer) -> None:
    response = _post(server, "/chat_tokenize", {"messages": QUESTION, "tools": [WEATHER_TOOL]})
    body = response.json()
    assert "get_current_weather" in body["templated_text"]
    ids = [t["id"] for t in body["tokenize_response"]]
    assert ids[0] == 1  # <|im_start|> from the template; none added by the tokenizer


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/chat_tokenize"])
def test_openapi_documents_the_routes(server: SluiceServer, route: str) -> None:
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    assert route in paths and "/v1/completions" in paths and "/tokenize" in paths


def test_chat_no_tool_reruns_without_tools(server: SluiceServer) -> None:
    """With `tools: []` and auto, no_tool is the only choice: the answer is plain content.
    (The call must fit in max_tokens before its name is known, as in TGI.)"""
    body: dict[str, Any] = {"messages": QUESTION, "max_tokens": 24, "temperature": 0}
    plain = _post(server, "/v1/chat/completions", body).json()["choices"][0]["message"]
    with_no_tool = {**body, "tools": [], "tool_choice": "auto"}
    chat = _post(server, "/v1/chat/completions", with_no_tool).json()
    assert chat["choices"][0]["message"] == plain
    chunks = _chunks(_sse(server, "/v1/chat/completions", {**with_no_tool, "stream": True}))
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == plain["content"]
