"""The clients TGI users already have, unchanged, against sluice: Hugging Face's
`text_generation` (sync and async, streamed and not) and `huggingface_hub.InferenceClient`."""

import asyncio

import httpx
import pytest
from huggingface_hub import InferenceClient
from text_generation import AsyncClient, Client
from text_generation.errors import ValidationError as ClientValidationError

from tests.e2e.server import SluiceServer
from tests.e2e.test_generate import PROMPTS


def test_text_generation_client_generate_and_stream(server: SluiceServer) -> None:
    client = Client(server.url, timeout=120)
    response = client.generate(PROMPTS[0], max_new_tokens=16, decoder_input_details=True)
    assert response.details.generated_tokens == len(response.details.tokens) <= 16
    assert response.details.finish_reason in ("length", "eos_token")
    assert response.details.seed is None
    streamed = list(client.generate_stream(PROMPTS[0], max_new_tokens=16))
    final = streamed[-1]
    assert final.generated_text == response.generated_text
    assert final.details is not None and final.details.generated_tokens == len(streamed)
    texts = "".join(r.token.text for r in streamed if not r.token.special)
    assert texts == response.generated_text


def test_text_generation_client_maps_validation_errors(server: SluiceServer) -> None:
    with pytest.raises(ClientValidationError, match="`top_p` must be > 0.0 and < 1.0"):
        Client(server.url).generate("Hi", top_p=1.0)


def test_text_generation_async_client(server: SluiceServer) -> None:
    async def run() -> tuple[str, str]:
        client = AsyncClient(server.url, timeout=120)
        response = await client.generate(PROMPTS[1], max_new_tokens=12, stop_sequences=[" sluice"])
        text = ""
        async for event in client.generate_stream(
            PROMPTS[1], max_new_tokens=12, stop_sequences=[" sluice"]
        ):
            if not event.token.special:
                text += event.token.text
        return response.generated_text, text

    generated, streamed = asyncio.run(run())
    assert generated == streamed


def test_inference_client_text_generation(fp32_server: SluiceServer) -> None:
    # float32: the repeats reuse the first call's cached prompt blocks, and in bfloat16 the
    # rounding of a step depends on its shape, which can tip a greedy token.
    client = InferenceClient(model=fp32_server.url, timeout=120)
    params = {"max_new_tokens": 16, "return_full_text": False}
    text = client.text_generation(PROMPTS[3], **params)
    output = client.text_generation(PROMPTS[3], details=True, **params)
    assert output.generated_text == text
    assert output.details.generated_tokens == len(output.details.tokens)
    chunks = list(client.text_generation(PROMPTS[3], stream=True, **params))
    assert "".join(chunks) == text


def test_compat_route_defaults_to_the_full_text(fp32_server: SluiceServer) -> None:
    """POST / prepends the prompt unless told otherwise, as TGI does for a model whose Hub
    pipeline tag is text-generation or unknown; the response is a one-element array. In
    float32: the repeat finds the prompt cached, and bfloat16 may round its tail differently."""
    body = {"inputs": PROMPTS[3], "parameters": {"max_new_tokens": 8}}
    (compat,) = httpx.post(f"{fp32_server.url}/", json=body, timeout=60).json()
    native = httpx.post(f"{fp32_server.url}/generate", json=body, timeout=60).json()
    assert compat["generated_text"] == PROMPTS[3] + native["generated_text"]


def test_inference_client_chat_completion(server: SluiceServer) -> None:
    client = InferenceClient(base_url=server.url, timeout=120)
    messages = [{"role": "user", "content": "What is a sluice?"}]
    reply = client.chat_completion(messages, max_tokens=16, temperature=0.0)
    content = reply.choices[0].message.content
    assert content
    assert reply.usage.completion_tokens <= 16
    chunks = client.chat_completion(messages, max_tokens=16, temperature=0.0, stream=True)
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert streamed == content
