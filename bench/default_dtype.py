#!/usr/bin/env python3
"""The default dtype, measured: W1 and W2 on a float32 server and a bfloat16 server of the
default model, side by side in the same run (sluice/bench/side_by_side.py), and each server's
time from start to healthy. The default (`sluice.model.loader.resolve_dtype`) must be the
faster of the two on W2 without losing W1, on the CPU at hand.

Usage: .venv/bin/python bench/default_dtype.py [--runs 3]
Writes bench/results/default_dtype_<cpu>.md and .json, <cpu> the CPU's kind (`cpu_kind`).
Nothing else heavy may run meanwhile."""

import argparse
from pathlib import Path

import torch

from sluice.bench.local_server import git_commit
from sluice.bench.machine import cpu_description, cpu_kind
from sluice.bench.side_by_side import render_table, run_side_by_side, write_results
from sluice.cpu import bfloat16_support
from sluice.model.loader import resolve_dtype

ROOT = Path(__file__).resolve().parent.parent
SERVERS = {"float32": ("--dtype", "float32"), "bfloat16": ("--dtype", "bfloat16")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results")
    args = parser.parse_args()
    runs = run_side_by_side(SERVERS, args.runs)
    default = str(resolve_dtype(None, torch.device("cpu"))).removeprefix("torch.")
    results = {
        "commit": git_commit(),
        "machine": cpu_description(),
        "bfloat16": bfloat16_support(),
        "default_dtype": default,
        "runs": runs,
    }
    lines = [
        "# Default dtype: float32 against bfloat16 on this CPU",
        "",
        f"Commit {results['commit']}, {results['machine']}; bfloat16 here: "
        f"{results['bfloat16']}. Default model, default flags but `--dtype`; {len(runs)} runs, "
        "each on two fresh servers side by side (each workload goes to both in turn, the first "
        "alternating); median (min-max). Start to healthy counts from the process's start "
        "(tokenizer, model load, warm-up), the second server starting beside the first.",
        "",
        *render_table(runs, "float32", "bfloat16"),
        "",
        f"The default dtype on this CPU: {default}.",
        "",
    ]
    write_results(args.output, f"default_dtype_{cpu_kind()}", results, lines)


if __name__ == "__main__":
    main()
