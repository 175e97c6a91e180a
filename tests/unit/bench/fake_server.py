"""A fake TGI server for the bench tests, as an httpx.MockTransport handler: streams
`max_new_tokens` token events, answers /info, and fails the prompts it is told to."""

import json
from collections.abc import Collection

import httpx

MODEL_ID = "fake/model"


def sse(*events: dict[str, object]) -> bytes:
    return b"".join(f"data: {json.dumps(event)}\n\n".encode() for event in events)


def token_stream(count: int) -> bytes:
    """`count` token events, the last one carrying `generated_text` as TGI's does."""
    events: list[dict[str, object]] = [
        {"token": {"id": i, "text": "x"}, "generated_text": None} for i in range(count - 1)
    ]
    events.append({"token": {"id": count, "text": "x"}, "generated_text": "x" * count})
    return sse(*events)


def fake_tgi(failing_prompts: Collection[str] = ()) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/info":
            return httpx.Response(200, json={"model_id": MODEL_ID})
        body = json.loads(request.content)
        if body["inputs"] in failing_prompts:
            return httpx.Response(422, json={"error": "no", "error_type": "validation"})
        return httpx.Response(200, content=token_stream(body["parameters"]["max_new_tokens"]))

    return httpx.MockTransport(handler)
