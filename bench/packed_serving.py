#!/usr/bin/env python3
"""A packed 4-bit model against the same model served dense, both in the default dtype, side by
side in the same run (sluice/bench/side_by_side.py): W1, W2 and time from start to healthy. The
packed model is `--quantize gguf` (the default model's own Q4_1 blocks on the int4 kernel) or,
with `--checkpoint NAME=DIR`, a GPTQ or AWQ checkpoint such as `sluice quantize` writes. On CPUs
without native bf16 the packed layers compute in bfloat16 and the rest in float32 (see
`sluice.quantization.scheme.packed_kernel_dtype`).

Usage: .venv/bin/python bench/packed_serving.py [--checkpoint NAME=DIR] [--runs 3]
Writes bench/results/packed_<NAME>_serving_<cpu>.md and .json, NAME "gguf" without
`--checkpoint`, <cpu> the CPU's kind (`cpu_kind`). Nothing else heavy may run meanwhile."""

import argparse
from pathlib import Path

import torch

from sluice.bench.local_server import git_commit
from sluice.bench.machine import cpu_description, cpu_kind
from sluice.bench.side_by_side import report_lines, run_side_by_side, write_results
from sluice.cpu import bfloat16_support
from sluice.model.loader import resolve_dtype

ROOT = Path(__file__).resolve().parent.parent
DENSE = "dense"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", metavar="NAME=DIR", help="a GPTQ or AWQ checkpoint")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results")
    args = parser.parse_args()
    name, flags = "gguf", ("--quantize", "gguf")
    if args.checkpoint is not None:
        name, _, directory = args.checkpoint.partition("=")
        flags = ("--model-id", directory)
    packed = f"{name} packed"
    runs = run_side_by_side({DENSE: (), packed: flags}, args.runs)
    dtype = str(resolve_dtype(None, torch.device("cpu"))).removeprefix("torch.")
    results = {"commit": git_commit(), "machine": cpu_description(), "dtype": dtype, "runs": runs}
    lines = report_lines(
        f"{packed} (`{' '.join(flags)}`) against the dense model, default dtype",
        f"default dtype {dtype} (bfloat16: {bfloat16_support()})",
        results,
        DENSE,
        packed,
    )
    write_results(args.output, f"packed_{name}_serving_{cpu_kind()}", results, lines)


if __name__ == "__main__":
    main()
