#!/usr/bin/env python3
"""W1 and W2 (shared/bench/WORKLOADS.md) against a sluice server and, in the same run, the
Hugging Face transformers `generate` baseline, both in bf16 on this machine.

Usage: .venv/bin/python bench/w1_w2_baseline.py [--runs 3] [--workloads PATH] [--output DIR]
Writes DIR/w1_w2_baseline.md and .json. Nothing else heavy may run meanwhile."""

import argparse
import asyncio
import dataclasses
import json
import math
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.generation.streamers import BaseStreamer

from sluice.bench.client import RunTimings, run_closed_loop
from sluice.bench.stats import SingleStreamRun, Spread, ThroughputRun
from sluice.bench.workloads import Workload, load_workload
from sluice.weights import resolve_model

ROOT = Path(__file__).resolve().parent.parent
W2_BASELINE_BATCH = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workloads", type=Path, help="default: the copy inside sluice.bench")
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results")
    parser.add_argument("--render-only", action="store_true", help="re-render the saved JSON")
    args = parser.parse_args()
    if args.render_only:
        saved = json.loads((args.output / "w1_w2_baseline.json").read_text())
        (args.output / "w1_w2_baseline.md").write_text(render_table(saved))
        return
    w1, w2 = load_workload("w1", args.workloads), load_workload("w2", args.workloads)
    sluice_w1, sluice_w2 = measure_sluice(w1, w2, args.runs)
    baseline_w1, baseline_w2 = measure_transformers(w1, w2, args.runs)
    results = {
        "commit": _git_commit(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "dtype": "bfloat16",
        "runs": args.runs,
        "sluice": {"w1": _as_dicts(sluice_w1), "w2": _as_dicts(sluice_w2)},
        "transformers": {"w1": _as_dicts(baseline_w1), "w2": _as_dicts(baseline_w2)},
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "w1_w2_baseline.json").write_text(json.dumps(results, indent=2))
    table = render_table(results)
    (args.output / "w1_w2_baseline.md").write_text(table)
    print(table)


def measure_sluice(
    w1: Workload, w2: Workload, runs: int
) -> tuple[list[SingleStreamRun], list[ThroughputRun]]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "sluice", "serve", "--hostname", "127.0.0.1", "--port"]
    server = subprocess.Popen([*command, str(port)], stderr=subprocess.DEVNULL)
    try:
        _wait_ready(url)
        _send(url, w1.limited(None, 8), 1)  # warm-up
        single, throughput = [], []
        for _ in range(runs):
            single.append(SingleStreamRun.of(_send(url, w1, 1)))
            throughput.append(ThroughputRun.of(_send(url, w2, len(w2.prompts))))
            print(f"sluice: {single[-1]}\n        {throughput[-1]}", flush=True)
        return single, throughput
    finally:
        server.terminate()
        server.wait(timeout=60)


def _send(url: str, workload: Workload, concurrency: int) -> RunTimings:
    async def send() -> RunTimings:
        limits = httpx.Limits(max_connections=concurrency + 1)
        async with httpx.AsyncClient(timeout=None, limits=limits) as client:
            prompts, max_new_tokens = workload.prompts, workload.max_new_tokens
            return await run_closed_loop(client, url, prompts, max_new_tokens, concurrency)

    return asyncio.run(send())


class _TokenClock(BaseStreamer):
    """Records when `generate` produces each new token (the first `put` is the prompt)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if self._seen_prompt:
            self.times.append(time.perf_counter())
        self._seen_prompt = True

    def end(self) -> None:
        pass


def measure_transformers(
    w1: Workload, w2: Workload, runs: int
) -> tuple[list[SingleStreamRun], list[ThroughputRun]]:
    path = resolve_model().path
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
    fixed_length = {"max_new_tokens": w1.max_new_tokens, "min_new_tokens": w1.max_new_tokens}
    single, throughput = [], []
    with torch.inference_mode():
        model.generate(**tokenizer(list(w1.prompts), return_tensors="pt"), max_new_tokens=8)
        for _ in range(runs):
            clock = _TokenClock()
            inputs = tokenizer(list(w1.prompts), return_tensors="pt")
            started = time.perf_counter()
            model.generate(**inputs, do_sample=False, streamer=clock, **fixed_length)
            single.append(_single_from_clock(started, clock.times))
            batch = tokenizer(
                list(w2.prompts[:W2_BASELINE_BATCH]), return_tensors="pt", padding=True
            )
            started = time.perf_counter()
            out = model.generate(**batch, do_sample=False, **fixed_length)
            wall = time.perf_counter() - started
            num_tokens = (out.shape[1] - batch["input_ids"].shape[1]) * out.shape[0]
            throughput.append(_static_batch_run(wall, num_tokens))
            print(f"transformers: {single[-1]}\n              {throughput[-1]}", flush=True)
    return single, throughput


def _single_from_clock(started: float, times: list[float]) -> SingleStreamRun:
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return SingleStreamRun(
        ttft_s=times[0] - started,
        mean_itl_s=sum(gaps) / len(gaps),
        decode_tokens_per_s=(len(times) - 1) / (times[-1] - times[0]),
        num_tokens=len(times),
    )


def _static_batch_run(wall: float, num_tokens: int) -> ThroughputRun:
    """A static batch finishes all requests together: latency = wall time; no per-token clock."""
    nan = float("nan")
    return ThroughputRun(
        wall_s=wall,
        output_tokens_per_s=num_tokens / wall,
        num_tokens=num_tokens,
        latency_p50_s=wall,
        latency_p90_s=wall,
        latency_p99_s=wall,
        ttft_p50_s=nan,
        ttft_p90_s=nan,
        ttft_p99_s=nan,
        itl_p50_s=nan,
        itl_p90_s=nan,
        itl_p99_s=nan,
    )


def render_table(results: dict[str, Any]) -> str:
    def cell(runs: list[dict[str, float]], key: str, scale: float = 1, digits: int = 1) -> str:
        values = [run[key] * scale for run in runs]
        if any(math.isnan(v) for v in values):
            return "n/a"
        return Spread.of(values).format(digits)

    def row(name: str, system: dict[str, list[dict[str, float]]]) -> str:
        w1, w2 = system["w1"], system["w2"]
        cells = [
            cell(w1, "decode_tokens_per_s"),
            cell(w1, "ttft_s", 1000, 0),
            cell(w2, "output_tokens_per_s"),
            cell(w2, "wall_s", digits=2),
            cell(w2, "ttft_p50_s", digits=2),
            cell(w2, "itl_p50_s", 1000, 0),
            cell(w2, "itl_p99_s", 1000, 0),
        ]
        return f"| {name} | " + " | ".join(cells) + " |"

    return "\n".join(
        [
            "# W1 and W2: sluice against the transformers baseline",
            "",
            f"Commit {results['commit']}, {results['machine']}, torch {results['torch']}, "
            f"bfloat16, {results['runs']} runs each; median (min-max).",
            "sluice runs as a server and is measured over HTTP (`/generate_stream`, EOS ignored); "
            "transformers `generate` runs in-process (W1 alone, W2 as one static batch of 64, "
            "so it has no per-token clock).",
            "",
            "| system | W1 decode tok/s | W1 TTFT ms | W2 output tok/s | W2 wall s | "
            "W2 TTFT p50 s | W2 ITL p50 ms | W2 ITL p99 ms |",
            "|---|---|---|---|---|---|---|---|",
            row("sluice", results["sluice"]),
            row("transformers generate", results["transformers"]),
            "",
        ]
    )


def _as_dicts(runs: list[SingleStreamRun] | list[ThroughputRun]) -> list[dict[str, float]]:
    return [dataclasses.asdict(r) for r in runs]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError("sluice did not become ready")


def _git_commit() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


if __name__ == "__main__":
    main()
