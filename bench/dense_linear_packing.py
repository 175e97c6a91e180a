#!/usr/bin/env python3
"""A decode step's weight matmuls on the default model's shapes (30 layers, each with weights of
its own so that they stream from memory as in a real step, and the LM head), at 1, 2, 16, 64
and 256 rows: `F.linear` on the weight as loaded, oneDNN's linear on the weight packed for it
ahead (what sluice used before its own kernel), and the C++ kernel on the packing of
model/kernel_packing.py, in float32 (weights kept in float32, and kept in bfloat16 as sluice
does where bfloat16 holds them exactly) and bfloat16.

Usage: .venv/bin/python bench/dense_linear_packing.py [--samples 9]
Writes bench/results/dense_linear_packing_<cpu kind>.md: milliseconds per step, median (min-max)
of `--samples`, beside the read bandwidth and GEMM rates measured in the same run. Weights are
random (rounded to bfloat16 for the bfloat16-kept case). Nothing else heavy may run meanwhile."""

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from sluice.bench.local_server import git_commit
from sluice.bench.machine import cpu_description, cpu_kind, measure_rates
from sluice.model.kernel_packing import pack, packs_weights
from sluice.model.layers.linear import dense_linear

ROOT = Path(__file__).resolve().parent.parent
LAYER_SHAPES = (  # input size, output size: qkv, o, gate_up, down
    (576, 960),
    (576, 576),
    (576, 3072),
    (1536, 576),
)
NUM_LAYERS = 30
LM_HEAD = (576, 49152)
NUM_ROWS = (1, 2, 16, 64, 256)
"""2: a bfloat16 decode alone runs as two rows on `F.linear` (layers/linear.py)."""

Prepare = Callable[[torch.Tensor], torch.Tensor]
Linear = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _onednn_pack(weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight, 64)


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")


CANDIDATES: dict[str, tuple[Prepare, Linear]] = {
    "F.linear": (lambda weight: weight, F.linear),
    "oneDNN packed": (_onednn_pack, _onednn_linear),
    "kernel": (lambda weight: pack(weight, narrow_exact_float32=False), dense_linear),
    "kernel, bf16-kept": (pack, dense_linear),
}
"""name -> (how the weight is prepared, how a row block is multiplied by it)."""


def _candidates(dtype: torch.dtype) -> list[str]:
    if dtype == torch.bfloat16:  # kept in bfloat16 either way
        return ["F.linear", "oneDNN packed", "kernel"]
    return list(CANDIDATES)


def _step_ms(dtype: torch.dtype, name: str, rows: int, samples: int) -> list[float]:
    prepare, linear = CANDIDATES[name]
    generator = torch.Generator().manual_seed(0)

    def weight(input_size: int, output_size: int) -> torch.Tensor:
        random = torch.randn(output_size, input_size, generator=generator)
        return prepare(random.to(torch.bfloat16).to(dtype))

    layers = [[weight(*shape) for shape in LAYER_SHAPES] for _ in range(NUM_LAYERS)]
    head = weight(*LM_HEAD)
    inputs = [torch.randn(rows, input_size).to(dtype) for input_size, _ in LAYER_SHAPES]
    head_input = torch.randn(rows, LM_HEAD[0]).to(dtype)

    def step() -> None:
        for layer in layers:
            for x, w in zip(inputs, layer, strict=True):
                linear(x, w)
        linear(head_input, head)

    step()
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        step()
        times.append((time.perf_counter() - started) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=9)
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results")
    args = parser.parse_args()
    cpu = torch.device("cpu")
    dtypes = [dtype for dtype in (torch.float32, torch.bfloat16) if packs_weights(dtype, cpu)]
    rates = measure_rates(tuple(dtypes))
    measured = ", ".join(
        f"{name} {rate / 1e9:.0f}" for name, rate in rates.gemm_flops_per_s.items()
    )
    lines = [
        "# A decode step's weight matmuls: F.linear, oneDNN packed, the C++ kernel",
        "",
        f"Commit {git_commit()}, torch {torch.__version__}, {cpu_description()}; measured "
        f"here: read {rates.read_bytes_per_s / 1e9:.1f} GB/s, GEMM (2048-square, GFLOP/s) "
        f"{measured}. Milliseconds per step (30 layers of distinct weights and the LM head), "
        f"median (min-max) of {args.samples}. Produced by `bench/dense_linear_packing.py`.",
        "",
        "| dtype | rows | " + " | ".join(CANDIDATES) + " |",
        "|---|---|" + "---|" * len(CANDIDATES),
    ]
    for dtype in dtypes:
        for rows in NUM_ROWS:
            cells = []
            for name in CANDIDATES:
                if name not in _candidates(dtype):
                    cells.append("")
                    continue
                times = _step_ms(dtype, name, rows, args.samples)
                cells.append(f"{statistics.median(times):.1f} ({min(times):.1f}-{max(times):.1f})")
            lines.append(f"| {str(dtype)[6:]} | {rows} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / f"dense_linear_packing_{cpu_kind()}.md"
    path.write_text("\n".join([*lines, ""]))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
