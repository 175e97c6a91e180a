"""Sends generation requests over /generate_stream and times every token as it arrives."""

import asyncio
import json
import time
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


async def stream_request(
    client: httpx.AsyncClient, url: str, prompt: str, max_new_tokens: int, ignore_eos: bool
) -> RequestTiming:
    parameters: dict[str, object] = {"max_new_tokens": max_new_tokens, "details": True}
    if ignore_eos:
        parameters["ignore_eos"] = True  # a sluice extension; TGI ignores unknown fields
    body = {"inputs": prompt, "parameters": parameters}
    token_times: list[float] = []
    text = ""
    sent_at = time.perf_counter()
    async with client.stream("POST", f"{url}/generate_stream", json=body) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            event = json.loads(line.removeprefix("data:"))
            if "error" in event:
                return RequestTiming(sent_at, tuple(token_times), text, error=str(event["error"]))
            token_times.append(time.perf_counter())
            if event.get("generated_text") is not None:
                text = event["generated_text"]
    return RequestTiming(sent_at, tuple(token_times), text)


async def run_concurrently(
    url: str, prompts: list[str], max_new_tokens: int, *, ignore_eos: bool = True
) -> tuple[float, list[RequestTiming]]:
    """Send every prompt at once; returns the wall time and each request's timing."""
    limits = httpx.Limits(max_connections=len(prompts) + 1)
    async with httpx.AsyncClient(timeout=None, limits=limits) as client:
        started = time.perf_counter()
        timings = await asyncio.gather(
            *(stream_request(client, url, p, max_new_tokens, ignore_eos) for p in prompts)
        )
        return time.perf_counter() - started, list(timings)
