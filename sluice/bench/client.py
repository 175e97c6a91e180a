"""Sends generation requests over /generate_stream (or, to compare with other servers, the
OpenAI /v1/completions stream) and times every token as it arrives.
A request that fails (HTTP error status, SSE error event, dropped connection, stream cut short)
comes back as a RequestTiming with `error` set, so callers count it instead of losing it."""

import asyncio
import json
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass

import httpx


@dataclass(frozen=True, slots=True)
class RequestTiming:
    sent_at: float
    token_times: tuple[float, ...]
    """Arrival time of each streamed token (perf_counter seconds)."""
    generated_text: str
    error: str | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.token_times)

    @property
    def ttft(self) -> float:
        return self.token_times[0] - self.sent_at

    @property
    def latency(self) -> float:
        return self.token_times[-1] - self.sent_at

    @property
    def inter_token_latencies(self) -> list[float]:
        times = self.token_times
        return [later - earlier for earlier, later in zip(times, times[1:], strict=False)]


@dataclass(frozen=True, slots=True)
class RunTimings:
    """One pass over a workload's prompts: its wall time and every request's timing."""

    wall_s: float
    timings: tuple[RequestTiming, ...]

    @property
    def completed(self) -> list[RequestTiming]:
        return [timing for timing in self.timings if timing.error is None]

    @property
    def errors(self) -> list[str]:
        return [timing.error for timing in self.timings if timing.error is not None]


async def stream_request(
    client: httpx.AsyncClient, url: str, prompt: str, max_new_tokens: int, ignore_eos: bool
) -> RequestTiming:
    """One request over /generate_stream, timing each token's arrival."""
    parameters: dict[str, object] = {"max_new_tokens": max_new_tokens, "details": True}
    if ignore_eos:
        parameters["ignore_eos"] = True  # a sluice extension; TGI ignores unknown fields
    body = {"inputs": prompt, "parameters": parameters}
    token_times: list[float] = []
    text: str | None = None
    sent_at = time.perf_counter()

    def failed(error: str) -> RequestTiming:
        return RequestTiming(sent_at, tuple(token_times), text or "", error=error)

    try:
        async with client.stream("POST", f"{url}/generate_stream", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                return failed(f"HTTP {response.status_code}: {_error_message(response.text)}")
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                event = json.loads(line.removeprefix("data:"))
                if "error" in event:
                    return failed(f"stream error: {event['error']}")
                token_times.append(time.perf_counter())
                if event.get("generated_text") is not None:
                    text = event["generated_text"]
    except httpx.HTTPError as error:
        return failed(f"{type(error).__name__}: {error}")
    except json.JSONDecodeError as error:
        return failed(f"malformed event: {error}")
    if text is None:
        return failed("stream ended before its final event")
    return RequestTiming(sent_at, tuple(token_times), text)


def openai_completion_request(model: str) -> "RequestFn":
    """Requests over /v1/completions, streamed, greedy, for a server serving `model`: what
    sluice and vLLM both speak. Each chunk with a choice is one token."""

    async def stream_completion(
        client: httpx.AsyncClient, url: str, prompt: str, max_new_tokens: int, ignore_eos: bool
    ) -> RequestTiming:
        body = {
            "model": model,
            "prompt": prompt,
            "max_tokens": max_new_tokens,
            "temperature": 0,
            "stream": True,
            "ignore_eos": ignore_eos,
        }
        token_times: list[float] = []
        pieces: list[str] = []
        finished = False
        sent_at = time.perf_counter()

        def failed(error: str) -> RequestTiming:
            return RequestTiming(sent_at, tuple(token_times), "".join(pieces), error=error)

        try:
            async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
                if response.status_code != 200:
                    await response.aread()
                    return failed(f"HTTP {response.status_code}: {_error_message(response.text)}")
                async for line in response.aiter_lines():
                    payload = line.removeprefix("data:").strip()
                    if not line.startswith("data:") or payload == "[DONE]":
                        continue
                    chunk = json.loads(payload)
                    if "error" in chunk:
                        return failed(f"stream error: {chunk['error']}")
                    for choice in chunk.get("choices") or ():
                        token_times.append(time.perf_counter())
                        pieces.append(choice.get("text") or "")
                        finished = finished or bool(choice.get("finish_reason"))
        except httpx.HTTPError as error:
            return failed(f"{type(error).__name__}: {error}")
        except json.JSONDecodeError as error:
            return failed(f"malformed chunk: {error}")
        if not finished:
            return failed("stream ended before its final chunk")
        return RequestTiming(sent_at, tuple(token_times), "".join(pieces))

    return stream_completion


RequestFn = Callable[[httpx.AsyncClient, str, str, int, bool], Coroutine[None, None, RequestTiming]]
"""(client, url, prompt, max_new_tokens, ignore_eos) -> one request's timing."""


def _error_message(body: str) -> str:
    """TGI's error bodies are `{"error": ..., "error_type": ...}`; anything else as sent."""
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body.strip()[:200]


async def run_closed_loop(
    client: httpx.AsyncClient,
    url: str,
    prompts: Sequence[str],
    max_new_tokens: int,
    concurrency: int,
    *,
    ignore_eos: bool = True,
    on_done: Callable[[RequestTiming], None] = lambda timing: None,
    request: RequestFn = stream_request,
) -> RunTimings:
    """Send every prompt once, keeping `concurrency` requests in flight: each finished request
    is replaced by the next prompt. Concurrency 1 is one request at a time; len(prompts) is
    everything at t=0. Timings come back in prompt order."""
    timings: list[RequestTiming | None] = [None] * len(prompts)
    next_indices = iter(range(len(prompts)))

    async def worker() -> None:
        for index in next_indices:  # shared: each index goes to exactly one worker
            timing = await request(client, url, prompts[index], max_new_tokens, ignore_eos)
            timings[index] = timing
            on_done(timing)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(prompts)))))
    wall_s = time.perf_counter() - started
    return RunTimings(wall_s, tuple(t for t in timings if t is not None))


def run_workload_blocking(
    url: str,
    prompts: Sequence[str],
    max_new_tokens: int,
    concurrency: int,
    *,
    ignore_eos: bool = True,
    request: RequestFn = stream_request,
) -> RunTimings:
    """`run_closed_loop` from synchronous code (benchmark scripts), with its own client sized
    for `concurrency`."""

    async def run() -> RunTimings:
        limits = httpx.Limits(max_connections=concurrency + 1)
        async with httpx.AsyncClient(timeout=None, limits=limits) as client:
            return await run_closed_loop(
                client,
                url,
                prompts,
                max_new_tokens,
                concurrency,
                ignore_eos=ignore_eos,
                request=request,
            )

    return asyncio.run(run())


async def fetch_server_info(client: httpx.AsyncClient, url: str) -> dict[str, object] | None:
    """The server's `/info` (model id, dtype, version...) to record beside the figures; None if
    it has none to give."""
    try:
        response = await client.get(f"{url}/info")
        info = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    return info if isinstance(info, dict) else None
