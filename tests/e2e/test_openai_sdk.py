"""The official `openai` SDK against a real server: chat and completions, streamed and not."""

import pytest

from tests.e2e.server import SluiceServer

openai = pytest.importorskip("openai")

QUESTION = "What is a sluice?"


def _client(server: SluiceServer) -> "openai.OpenAI":
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="-", timeout=120)


def test_openai_sdk_chat(server: SluiceServer) -> None:
    client = _client(server)
    messages = [{"role": "user", "content": QUESTION}]
    completion = client.chat.completions.create(
        model="tgi", messages=messages, max_tokens=12, temperature=0, seed=1
    )
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("length", "stop")
    assert completion.usage is not None and completion.usage.completion_tokens <= 12

    stream = client.chat.completions.create(
        model="tgi",
        messages=messages,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == choice.message.content
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == completion.usage.completion_tokens


def test_openai_sdk_completions(server: SluiceServer) -> None:
    client = _client(server)
    completion = client.completions.create(
        model="tgi",
        prompt=["The capital of France is", "Once upon a time"],
        max_tokens=4,
        temperature=0,
    )
    assert sorted(choice.index for choice in completion.choices) == [0, 1]
    assert all(choice.finish_reason == "length" for choice in completion.choices)

    stream = client.completions.create(
        model="tgi", prompt="The capital of France is", max_tokens=4, temperature=0, stream=True
    )
    text = "".join(chunk.choices[0].text for chunk in stream)
    first = next(choice for choice in completion.choices if choice.index == 0)
    assert text == first.text


def test_openai_sdk_errors_raise(server: SluiceServer) -> None:
    client = _client(server)
    with pytest.raises(openai.UnprocessableEntityError):
        client.completions.create(model="tgi", prompt="a", suffix="b", max_tokens=1)
