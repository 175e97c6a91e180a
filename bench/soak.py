#!/usr/bin/env python3
"""Soak: `--minutes` (15) of mixed traffic on one sluice server with the default model, its
resident memory, open file descriptors, KV blocks in use and queue size sampled every 10 s.

Each minute: 40 s of steady traffic from WORKERS clients (the mix of bench/soak_traffic.py),
with a burst of 3x `--max-concurrent-requests` short requests at second 20; then the clients
stop, the server drains, and a one-token request refreshes the KV gauge (it moves with engine
steps only), which must be back at its baseline. Targets (issue 16): no 5xx, no accepted request
lost (each one answered or ended by an error event), the KV blocks back at the baseline after
every burst, resident memory growing less than 5% from the 2nd minute to the last.

Usage: .venv/bin/python bench/soak.py [--minutes 15] [--output bench/results]
Writes soak_<cpu kind>.md and .png there. Nothing else heavy may run meanwhile: the figures are
not speeds, but a starved server answers late and the clients give up after 120 s."""

import argparse
import asyncio
import os
import random
import time
from collections import Counter
from pathlib import Path

import httpx
from soak_report import Drain, Sample, Soak, write_report
from soak_traffic import MIX, Outcome, Prompts, Request, burst_member, run_one

from sluice.bench.local_server import git_commit, local_server_process
from sluice.bench.machine import cpu_description, cpu_kind

MAX_CONCURRENT = 16
MAX_INPUT_TOKENS = 1024
SERVER_FLAGS = (
    *("--max-concurrent-requests", str(MAX_CONCURRENT)),
    *("--max-input-tokens", str(MAX_INPUT_TOKENS), "--max-total-tokens", "1536"),
)
WORKERS = 8
CYCLE_S = 60
TRAFFIC_S = 40
BURST_AT_S = 20
BURST_SIZE = 3 * MAX_CONCURRENT
SAMPLE_EVERY_S = 10
REFUSED_BACKOFF_S = 0.5
DRAIN_TIMEOUT_S = 30
SHORT_PROMPTS = (
    "What is a sluice gate?",
    "Write a haiku about rivers.",
    "List three uses of a canal.",
    "Explain continuous batching in one paragraph.",
    "Give a JSON object describing a person named Ada, aged 36.",
    "Translate 'good morning' into French and German.",
    "Why is the sea salty?",
    "Count from one to twenty.",
)


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (the engine process and any helpers)."""
    tree, index = [pid], 0
    while index < len(tree):
        for task in Path(f"/proc/{tree[index]}/task").glob("*"):
            children = (task / "children").read_text().split()
            tree.extend(int(child) for child in children)
        index += 1
    return tree


def resident_mib(pids: list[int]) -> float:
    total_kib = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total_kib += int(line.split()[1])
    return total_kib / 1024


def open_fds(pids: list[int]) -> int:
    return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in pids)


async def read_gauges(client: httpx.AsyncClient) -> tuple[float, float]:
    """KV blocks in use and queue size, from /metrics."""
    values = {}
    for line in (await client.get("/metrics")).text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("sluice_kv_cache_blocks_used", "tgi_queue_size"):
            values[name] = float(value)
    return values["sluice_kv_cache_blocks_used"], values["tgi_queue_size"]


async def fresh_kv_blocks_used(client: httpx.AsyncClient) -> float:
    """After a one-token request: the gauge moves with engine steps only."""
    body = {"inputs": "Hi", "parameters": {"max_new_tokens": 1}}
    (await client.post("/generate", json=body)).raise_for_status()
    return (await read_gauges(client))[0]


async def calibrate_prompts(client: httpx.AsyncClient) -> Prompts:
    """A prompt 16 tokens under the input limit and one 64 tokens over it."""
    sentence = "The lock keeper opens the upper gate and the boat rises slowly. "
    per_sentence = len((await client.post("/tokenize", json={"inputs": sentence})).json())
    count = (MAX_INPUT_TOKENS - 16) // per_sentence
    near = sentence * count
    while len((await client.post("/tokenize", json={"inputs": near + sentence})).json()) < (
        MAX_INPUT_TOKENS - 16
    ):
        near += sentence
    over = near + sentence * (80 // per_sentence + 1)
    return Prompts(SHORT_PROMPTS, near, over)


async def sample_forever(
    soak: Soak, client: httpx.AsyncClient, server_pid: int, started: float
) -> None:
    while True:
        pids = process_tree(server_pid)
        kv, queue = await read_gauges(client)
        soak.samples.append(
            Sample(time.monotonic() - started, resident_mib(pids), open_fds(pids), kv, queue)
        )
        await asyncio.sleep(SAMPLE_EVERY_S)


async def steady_client(
    soak: Soak, client: httpx.AsyncClient, prompts: Prompts, seed: int, stop_at: float
) -> None:
    rng = random.Random(seed)
    requests, weights = zip(*MIX, strict=True)
    while time.monotonic() < stop_at:
        request: Request = rng.choices(requests, weights)[0]
        result = await run_one(request, client, prompts, rng)
        soak.record(request.__name__, result)
        if result.outcome is Outcome.REFUSED:
            await asyncio.sleep(REFUSED_BACKOFF_S)  # as a client told "overloaded" would


async def burst(soak: Soak, client: httpx.AsyncClient, prompts: Prompts, seed: int) -> Counter:
    rng = random.Random(seed)
    results = await asyncio.gather(
        *(run_one(burst_member, client, prompts, rng) for _ in range(BURST_SIZE))
    )
    for result in results:
        soak.record("burst_member", result)
    return Counter(result.outcome for result in results)


async def one_minute(soak: Soak, client: httpx.AsyncClient, prompts: Prompts, minute: int) -> None:
    started = time.monotonic()
    clients = [
        steady_client(soak, client, prompts, 1000 * minute + index, started + TRAFFIC_S)
        for index in range(WORKERS)
    ]

    async def delayed_burst() -> Counter:
        await asyncio.sleep(BURST_AT_S)
        return await burst(soak, client, prompts, minute)

    *_, burst_outcomes = await asyncio.gather(*clients, delayed_burst())
    drained_at = time.monotonic()
    kv = await fresh_kv_blocks_used(client)
    while kv != soak.kv_baseline and time.monotonic() - drained_at < DRAIN_TIMEOUT_S:
        await asyncio.sleep(0.5)
        kv = await fresh_kv_blocks_used(client)
    back = time.monotonic() - drained_at if kv == soak.kv_baseline else None
    soak.drains.append(Drain(minute, burst_outcomes, kv, back))
    await asyncio.sleep(max(0.0, started + CYCLE_S - time.monotonic()))


async def run_soak(url: str, server_pid: int, minutes: int) -> Soak:
    soak = Soak()
    limits = httpx.Limits(max_connections=BURST_SIZE + WORKERS + 8)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        prompts = await calibrate_prompts(client)
        soak.kv_baseline = await fresh_kv_blocks_used(client)
        started = time.monotonic()
        sampler = asyncio.create_task(sample_forever(soak, client, server_pid, started))
        for minute in range(1, minutes + 1):
            await one_minute(soak, client, prompts, minute)
            print(
                f"minute {minute}: {sum(sum(c.values()) for c in soak.outcomes.values())} "
                f"requests, {len(soak.failures)} failed",
                flush=True,
            )
        sampler.cancel()
    return soak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=15)
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    with local_server_process(*SERVER_FLAGS) as (url, server):
        soak = asyncio.run(run_soak(url, server.pid, args.minutes))
    name = f"soak_{cpu_kind()}"
    header = (
        f"Commit {git_commit()}; {cpu_description()}; {args.minutes} minutes; server flags "
        f"`{' '.join(SERVER_FLAGS)}`; {WORKERS} steady clients, a burst of {BURST_SIZE} each "
        "minute."
    )
    write_report(soak, header, args.output / f"{name}.md", args.output / f"{name}.png")


if __name__ == "__main__":
    main()
