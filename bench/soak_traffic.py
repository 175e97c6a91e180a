"""The requests of the soak benchmark (bench/soak.py), each judged by how it ended.

Every kind of request a TGI user sends, and the ways clients misbehave: streamed and not,
native and chat, grammar, best_of, stop strings, prompts at and over the input limit, and
clients that go away mid-stream. What counts as a failure is what a user must never see: a 5xx,
or a request the server accepted that ended without its answer or an error (a cut connection, a
stream without its final event)."""

import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import httpx


class Outcome(Enum):
    ANSWERED = "answered"
    REFUSED = "refused as expected"  # 429 when overloaded, 422 for a prompt over the limit
    LEFT = "client left mid-stream"
    ERROR_EVENT = "ended with an error event"
    FAILED = "failed"  # a 5xx, another status, or an accepted request that vanished


@dataclass(frozen=True, slots=True)
class Prompts:
    short: tuple[str, ...]
    near_limit: str
    """A prompt a few tokens under `--max-input-tokens`."""
    over_limit: str


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    detail: str = ""


Request = Callable[[httpx.AsyncClient, Prompts, random.Random], Awaitable[Result]]

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def _chat(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


async def generate(client: httpx.AsyncClient, prompts: Prompts, rng: random.Random) -> Result:
    parameters = {"max_new_tokens": rng.randint(8, 64)}
    return await _post(client, "/generate", prompts, rng, parameters)


async def grammar(client: httpx.AsyncClient, prompts: Prompts, rng: random.Random) -> Result:
    parameters = {"max_new_tokens": 48, "grammar": {"type": "json", "value": SCHEMA}}
    return await _post(client, "/generate", prompts, rng, parameters)


async def best_of(client: httpx.AsyncClient, prompts: Prompts, rng: random.Random) -> Result:
    parameters = {"max_new_tokens": 16, "best_of": 2, "do_sample": True, "details": True}
    return await _post(client, "/generate", prompts, rng, parameters)


async def stop_strings(client: httpx.AsyncClient, prompts: Prompts, rng: random.Random) -> Result:
    parameters = {"max_new_tokens": 48, "stop": [" the", ".", "\n"]}
    return await _post(client, "/generate", prompts, rng, parameters)


async def near_limit(client: httpx.AsyncClient, prompts: Prompts, rng: random.Random) -> Result:
    body = {"inputs": prompts.near_limit, "parameters": {"max_new_tokens": 16}}
    return _judge(await _send(client, "/generate", body))


async def over_limit(client: httpx.AsyncClient, prompts: Prompts, rng: random.Random) -> Result:
    body = {"inputs": prompts.over_limit, "parameters": {"max_new_tokens": 16}}
    return _judge(await _send(client, "/generate", body), refused=422)


async def chat(client: httpx.AsyncClient, prompts: Prompts, rng: random.Random) -> Result:
    body = {"messages": _chat(rng.choice(prompts.short)), "max_tokens": rng.randint(8, 48)}
    return _judge(await _send(client, "/v1/chat/completions", body))


async def native_stream(client: httpx.AsyncClient, prompts: Prompts, rng: random.Random) -> Result:
    body = {"inputs": rng.choice(prompts.short), "parameters": {"max_new_tokens": 48}}
    return await _stream(client, "/generate_stream", body, leave_after=None)


async def chat_stream(client: httpx.AsyncClient, prompts: Prompts, rng: random.Random) -> Result:
    body = {"messages": _chat(rng.choice(prompts.short)), "max_tokens": 48, "stream": True}
    return await _stream(client, "/v1/chat/completions", body, leave_after=None)


async def leaves_mid_stream(
    client: httpx.AsyncClient, prompts: Prompts, rng: random.Random
) -> Result:
    body = {"inputs": rng.choice(prompts.short), "parameters": {"max_new_tokens": 200}}
    leave_after = rng.randint(1, 10)
    return await _stream(client, "/generate_stream", body, leave_after)


async def burst_member(client: httpx.AsyncClient, prompts: Prompts, rng: random.Random) -> Result:
    body = {"inputs": rng.choice(prompts.short), "parameters": {"max_new_tokens": 8}}
    return _judge(await _send(client, "/generate", body))


MIX: tuple[tuple[Request, int], ...] = (
    (generate, 4),
    (native_stream, 4),
    (chat, 2),
    (chat_stream, 2),
    (grammar, 1),
    (best_of, 1),
    (stop_strings, 2),
    (near_limit, 1),
    (over_limit, 1),
    (leaves_mid_stream, 2),
)
"""The steady traffic: each request and its weight."""


async def _post(
    client: httpx.AsyncClient,
    route: str,
    prompts: Prompts,
    rng: random.Random,
    parameters: dict[str, object],
) -> Result:
    body = {"inputs": rng.choice(prompts.short), "parameters": parameters}
    return _judge(await _send(client, route, body))


async def _send(client: httpx.AsyncClient, route: str, body: dict[str, object]) -> httpx.Response:
    return await client.post(route, json=body)


def _judge(response: httpx.Response, refused: int = 429) -> Result:
    """`refused`: the status this request expects besides 200; 429 (overloaded, TGI's answer
    beyond `--max-concurrent-requests`) is expected of any request."""
    if response.status_code == 200:
        return Result(Outcome.ANSWERED)
    if response.status_code in (refused, 429):
        return Result(Outcome.REFUSED)
    return Result(Outcome.FAILED, f"{response.status_code} {response.text[:200]}")


async def _stream(
    client: httpx.AsyncClient,
    route: str,
    body: dict[str, object],
    leave_after: int | None,
) -> Result:
    """A stream read to its end (its final event, `[DONE]` or an error event), or left after
    `leave_after` events by closing the connection."""
    events = 0
    async with client.stream("POST", route, json=body) as response:
        if response.status_code != 200:
            await response.aread()
            return _judge(response)
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            payload = line[len("data:") :].strip()
            if payload == "[DONE]":
                return Result(Outcome.ANSWERED)
            event = json.loads(payload)
            if "error" in event:  # overloaded: TGI's stream answer beyond the permits
                return _judge_error_event(event)
            events += 1
            if leave_after is not None and events >= leave_after:
                return Result(Outcome.LEFT)
            if event.get("generated_text") is not None:  # the native stream's last event
                return Result(Outcome.ANSWERED)
    return Result(Outcome.FAILED, f"the stream ended after {events} events, unfinished")


def _judge_error_event(event: dict[str, Any]) -> Result:
    """A native stream's error event names its type; a chat stream's (TGI's OpenAI shape,
    `{"error": {"message": ..., "http_status_code": 422}}`) only its message."""
    error = event["error"]
    message = error["message"] if isinstance(error, dict) else error
    overloaded = event.get("error_type") == "overloaded" or message == "Model is overloaded"
    return Result(Outcome.REFUSED if overloaded else Outcome.ERROR_EVENT, str(message))


async def run_one(
    request: Request, client: httpx.AsyncClient, prompts: Prompts, rng: random.Random
) -> Result:
    """`request`, a transport error (a cut connection) counted as its failure."""
    try:
        return await request(client, prompts, rng)
    except httpx.HTTPError as error:
        return Result(Outcome.FAILED, f"{type(error).__name__}: {error}")
