#!/usr/bin/env python3
"""The default model on 2 tensor-parallel shards against 1, both in the default dtype, side by
side in the same run (sluice/bench/side_by_side.py): W1, W2 and time from start to healthy.
Each shard of the sharded server is pinned to its share of the cores (one each on a 2-core
machine) and runs one thread; the single server runs a thread per core. Where the step's time
goes (collectives against compute) is bench/tensor_parallel_step.py's business.

Usage: .venv/bin/python bench/sharded_serving.py [--runs 3]
Writes bench/results/sharded_serving_<cpu>.md and .json, <cpu> the CPU's kind (`cpu_kind`).
Nothing else heavy may run meanwhile."""

import argparse
from pathlib import Path

import torch

from sluice.bench.local_server import git_commit
from sluice.bench.machine import cpu_description, cpu_kind
from sluice.bench.side_by_side import report_lines, run_side_by_side, write_results
from sluice.model.loader import resolve_dtype

ROOT = Path(__file__).resolve().parent.parent
ONE, TWO = "1 shard", "2 shards"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results")
    args = parser.parse_args()
    runs = run_side_by_side({ONE: (), TWO: ("--num-shard", "2")}, args.runs)
    dtype = str(resolve_dtype(None, torch.device("cpu"))).removeprefix("torch.")
    results = {"commit": git_commit(), "machine": cpu_description(), "dtype": dtype, "runs": runs}
    lines = report_lines(
        "The default model on 2 shards (`--num-shard 2`) against 1, default dtype",
        f"default dtype {dtype}",
        results,
        ONE,
        TWO,
    )
    write_results(args.output, f"sharded_serving_{cpu_kind()}", results, lines)


if __name__ == "__main__":
    main()
