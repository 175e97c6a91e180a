#!/usr/bin/env python3
"""Dense linears on the default model's shapes: `F.linear` on the weight as loaded against
oneDNN's linear on the weight packed ahead (model/onednn_packing.py), at 1, 2, 16, 64 and 256
rows, in float32 and (where the CPU has bf16 instructions, the only place sluice packs it)
bfloat16, beside the measured 2048-square GEMM rate.

Usage: .venv/bin/python bench/dense_linear_packing.py [--samples 20]
Writes bench/results/dense_linear_packing_<cpu kind>.md: milliseconds per call (median of
`--samples`) and GFLOP/s. Weights are random. Nothing else heavy may run meanwhile."""

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from sluice.bench.local_server import git_commit
from sluice.bench.machine import cpu_description, cpu_kind, measure_rates
from sluice.model.layers.linear import dense_linear
from sluice.model.onednn_packing import pack, packing_pays

ROOT = Path(__file__).resolve().parent.parent
SHAPES = (  # name, input size, output size, calls per decode step
    ("qkv_proj", 576, 960, 30),
    ("o_proj", 576, 576, 30),
    ("gate_up_proj", 576, 3072, 30),
    ("down_proj", 1536, 576, 30),
    ("lm_head", 576, 49152, 1),
)
NUM_ROWS = (1, 2, 16, 64, 256)
"""2: a bfloat16 decode alone runs as two rows (layers/linear.py)."""


def _median_ms(call: Callable[[], torch.Tensor], samples: int) -> float:
    for _ in range(3):
        call()
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results")
    args = parser.parse_args()
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    dtypes = [dtype for dtype in (torch.float32, torch.bfloat16) if packing_pays(dtype, cpu)]
    rates = measure_rates(tuple(dtypes)).gemm_flops_per_s
    measured = ", ".join(f"{name} {rate / 1e9:.0f}" for name, rate in rates.items())
    lines = [
        "# Dense linears: F.linear against oneDNN on a prepacked weight",
        "",
        f"Commit {git_commit()}, torch {torch.__version__}, {cpu_description()}; GEMM "
        f"measured here (2048-square, GFLOP/s): {measured}. Milliseconds per call, median of "
        f"{args.samples}, and GFLOP/s. Produced by `bench/dense_linear_packing.py`.",
        "",
        "| dtype | layer | rows | F.linear ms | packed ms | F.linear GFLOP/s | "
        "packed GFLOP/s | speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    per_step = {(dtype, rows): [0.0, 0.0] for dtype in dtypes for rows in NUM_ROWS}
    for dtype, (name, input_size, output_size, calls) in (
        (dtype, shape) for dtype in dtypes for shape in SHAPES
    ):
        weight = torch.randn(output_size, input_size).to(dtype)
        packed = pack(weight)
        for rows in NUM_ROWS:
            x = torch.randn(rows, input_size).to(dtype)
            plain = _median_ms(lambda x=x, w=weight: F.linear(x, w), args.samples)
            ours = _median_ms(lambda x=x, w=packed: dense_linear(x, w), args.samples)
            per_step[dtype, rows][0] += calls * plain
            per_step[dtype, rows][1] += calls * ours
            flops = 2 * rows * input_size * output_size
            lines.append(
                f"| {str(dtype)[6:]} | {name} {input_size}->{output_size} | {rows} | "
                f"{plain:.3f} | {ours:.3f} | "
                f"{flops / plain / 1e6:.0f} | {flops / ours / 1e6:.0f} | {plain / ours:.2f}x |"
            )
            print(lines[-1], flush=True)
    lines += ["", "A decode step's weight matmuls (30 layers and the LM head), ms:", ""]
    lines += ["| dtype | rows | F.linear | packed | speed-up |", "|---|---|---|---|---|"]
    for (dtype, rows), (plain, ours) in per_step.items():
        lines.append(
            f"| {str(dtype)[6:]} | {rows} | {plain:.1f} | {ours:.1f} | {plain / ours:.2f}x |"
        )
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / f"dense_linear_packing_{cpu_kind()}.md"
    path.write_text("\n".join([*lines, ""]))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
