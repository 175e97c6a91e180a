#!/usr/bin/env python3
"""Time to first token with a ~1,000-token prefix, cold (a prefix no request sent before) and
warm (the same prefix again with a different short suffix, so the prefix cache supplies its
blocks), against a real sluice server with default flags.

Usage: .venv/bin/python bench/prefix_cache_ttft.py [--runs 5] [--prefix-tokens 1000]
    [--note TEXT] [--output DIR]
Writes DIR/prefix_cache_ttft.md. The target: warm TTFT at least 5x faster than cold."""

import argparse
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import torch

from sluice.bench.local_server import git_commit, local_server
from sluice.bench.machine import cpu_description

ROOT = Path(__file__).resolve().parent.parent
PARAGRAPH = (
    "The northern canal has forty locks. Each lock keeper inspects the gates before the spring "
    "floods, greases the hinges every month and logs each opening with the time, the operator "
    "and the reason. During a storm warning two operators must agree before a gate opens. "
)
SUFFIXES = ("Question: when may a gate open in a storm?", "Question: what goes in the log?")
MAX_NEW_TOKENS = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--prefix-tokens", type=int, default=1000)
    parser.add_argument("--note", default="", help="a line on the conditions, e.g. a shared CPU")
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with local_server() as url, httpx.Client(base_url=url, timeout=300) as client:
        repeats = _paragraphs_for(client, args.prefix_tokens)
        _ttft(client, _prefix(repeats) + SUFFIXES[0])  # warm-up: first-request costs
        runs = [_measure(client, repeats) for _ in range(args.runs)]
        info = client.get("/info").json()
    report = _render(runs, info, args, load_before, os.getloadavg())
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "prefix_cache_ttft.md").write_text(report)
    print(report)


def _measure(client: httpx.Client, repeats: int) -> dict[str, float]:
    prefix = _prefix(repeats)
    num_tokens = len(client.post("/tokenize", json={"inputs": prefix + SUFFIXES[0]}).json())
    cold = _ttft(client, prefix + SUFFIXES[0])
    hits_before = _hit_tokens(client)
    warm = _ttft(client, prefix + SUFFIXES[1])
    run = {
        "prompt_tokens": num_tokens,
        "cold_s": cold,
        "warm_s": warm,
        "hit_tokens": _hit_tokens(client) - hits_before,
    }
    print(
        f"prompt {num_tokens} tokens: cold {cold * 1000:.0f} ms, warm {warm * 1000:.0f} ms, "
        f"{run['hit_tokens']:.0f} tokens from the cache",
        flush=True,
    )
    return run


def _prefix(repeats: int) -> str:
    """A prefix no earlier request shares: a unique first line, then the repeated text."""
    return f"Copy {uuid.uuid4().hex} of the manual.\n" + PARAGRAPH * repeats


def _paragraphs_for(client: httpx.Client, num_tokens: int) -> int:
    one = len(client.post("/tokenize", json={"inputs": PARAGRAPH}).json())
    return max(1, round(num_tokens / one))


def _ttft(client: httpx.Client, inputs: str) -> float:
    """Seconds from sending the request to its first streamed token."""
    body = {"inputs": inputs, "parameters": {"max_new_tokens": MAX_NEW_TOKENS}}
    started = time.perf_counter()
    first: float | None = None
    with client.stream("POST", "/generate_stream", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if first is None and line.startswith("data:"):
                first = time.perf_counter() - started
    if first is None:
        raise RuntimeError("the stream produced no token")
    return first


def _hit_tokens(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("sluice_prefix_cache_hit_tokens "):
            return float(line.split()[1])
    raise RuntimeError("no sluice_prefix_cache_hit_tokens on /metrics")


def _spread(values: list[float], scale: float = 1000) -> str:
    scaled = [v * scale for v in values]
    return f"{statistics.median(scaled):.0f} ({min(scaled):.0f}-{max(scaled):.0f})"


def _render(
    runs: list[dict[str, float]],
    info: dict[str, Any],
    args: argparse.Namespace,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> str:
    cold = [r["cold_s"] for r in runs]
    warm = [r["warm_s"] for r in runs]
    ratios = [c / w for c, w in zip(cold, warm, strict=True)]
    ratio = statistics.median(cold) / statistics.median(warm)
    lines = [
        "# Prefix cache: time to first token, cold and warm",
        "",
        f"Commit {git_commit()}, {cpu_description()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}; model "
        f"{info['model_id']} ({info['model_dtype']}), default flags. {len(runs)} runs; "
        "median (min-max).",
        f"Each run: a prompt of {statistics.median(r['prompt_tokens'] for r in runs):.0f} tokens "
        "whose prefix no earlier request sent (cold), then the same prefix with another short "
        "suffix (warm), both on `/generate_stream` with nothing else running on the server; "
        f"TTFT is measured by the client from sending to the first event.",
        "",
        "| cold TTFT ms | warm TTFT ms | cold / warm (of medians) | per-run ratio | "
        "warm tokens from the cache |",
        "|---|---|---|---|---|",
        f"| {_spread(cold)} | {_spread(warm)} | {ratio:.1f}x | "
        f"{statistics.median(ratios):.1f}x ({min(ratios):.1f}-{max(ratios):.1f}) | "
        f"{statistics.median(r['hit_tokens'] for r in runs):.0f} |",
        "",
        "Per run (prompt tokens, cold ms, warm ms): "
        + "; ".join(
            f"{r['prompt_tokens']:.0f}, {r['cold_s'] * 1000:.0f}, {r['warm_s'] * 1000:.0f}"
            for r in runs
        )
        + ".",
        "",
        f"Target: warm at least 5x faster than cold: {'met' if ratio >= 5 else 'not met'}.",
        f"Load average (1, 5, 15 min) before: {_load(load_before)}; after: {_load(load_after)}.",
    ]
    if args.note:
        lines.append(args.note)
    return "\n".join(lines) + "\n"


def _load(load: tuple[float, float, float]) -> str:
    return ", ".join(f"{value:.1f}" for value in load)


if __name__ == "__main__":
    main()
