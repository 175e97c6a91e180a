#!/usr/bin/env python3
"""`--quantize gguf` (the default model's own Q4_1 blocks on the int4 kernel) against the same
model served dense, both in the default dtype, side by side in the same run
(sluice/bench/side_by_side.py): W1, W2 and time from start to healthy. On CPUs without native
bf16 the packed layers compute in bfloat16 and the rest in float32 (see
`sluice.quantization.scheme.packed_kernel_dtype`).

Usage: .venv/bin/python bench/packed_gguf_serving.py [--runs 3]
Writes bench/results/packed_gguf_serving_<cpu>.md and .json, <cpu> the CPU's kind
(`cpu_kind`). Nothing else heavy may run meanwhile."""

import argparse
from pathlib import Path

import torch

from sluice.bench.local_server import git_commit
from sluice.bench.machine import cpu_description, cpu_kind
from sluice.bench.side_by_side import render_table, run_side_by_side, write_results
from sluice.cpu import bfloat16_support
from sluice.model.loader import resolve_dtype

ROOT = Path(__file__).resolve().parent.parent
SERVERS: dict[str, tuple[str, ...]] = {"dense": (), "gguf packed": ("--quantize", "gguf")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results")
    args = parser.parse_args()
    runs = run_side_by_side(SERVERS, args.runs)
    dtype = str(resolve_dtype(None, torch.device("cpu"))).removeprefix("torch.")
    results = {"commit": git_commit(), "machine": cpu_description(), "dtype": dtype, "runs": runs}
    lines = [
        "# `--quantize gguf` against the dense model, default dtype",
        "",
        f"Commit {results['commit']}, {results['machine']}; default dtype {dtype} (bfloat16: "
        f"{bfloat16_support()}). {len(runs)} runs, each on two fresh servers side by side "
        "(each workload goes to both in turn, the first alternating); median (min-max).",
        "",
        *render_table(runs, "dense", "gguf packed"),
        "",
    ]
    write_results(args.output, f"packed_gguf_serving_{cpu_kind()}", results, lines)


if __name__ == "__main__":
    main()
