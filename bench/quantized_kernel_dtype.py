#!/usr/bin/env python3
"""Which activation dtype torch's CPU int4 and int8 weight-only kernels are fast in: a float32
model's packed layers computing in float32 against computing in bfloat16 (converted at the
layer's edges, `kernel_dtype`), beside dense float32 `F.linear`, on SmolLM2-135M's projection
shapes, at 1 to 256 tokens. In float32 the layers multiply by their weight dequantized chunk by
chunk instead of calling the kernel; the kernel's own float32 time is measured beside them.

Usage: .venv/bin/python bench/quantized_kernel_dtype.py [--samples 5]
Writes bench/results/quantized_kernel_dtype.md (median microseconds per call). Weights are
random: the kernels' speed does not depend on the values. Nothing else heavy may run meanwhile."""

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sluice.bench.local_server import git_commit
from sluice.bench.machine import cpu_description
from sluice.quantization import Int4LinearMethod, Int8LinearMethod, QuantizedWeight

ROOT = Path(__file__).resolve().parent.parent
SHAPES = (("gate/up_proj", 576, 3072), ("down_proj", 1536, 576), ("qkv_proj", 576, 960))
NUM_TOKENS = (1, 16, 64, 256)
INT4_GROUP_SIZE = 32  # the GGUF Q4 blocks' group
COLUMNS = (
    *("int4 fp32 kernel", "int4 fp32", "int4 bf16"),
    *("int8 fp32 kernel", "int8 fp32", "int8 bf16"),
)

Call = Callable[[torch.Tensor], torch.Tensor]


def _packed_layer(
    method: Int4LinearMethod | Int8LinearMethod, input_size: int, output_size: int, bits: int
) -> nn.Module:
    group_size = INT4_GROUP_SIZE if bits == 4 else input_size
    num_groups = input_size // group_size
    weight = QuantizedWeight(
        torch.randint(0, 2**bits, (output_size, input_size), dtype=torch.int32),
        (torch.rand(num_groups, output_size) * 0.01 + 0.001).half(),
        torch.full((num_groups, output_size), 2 ** (bits - 1), dtype=torch.int32),
        bits,
        group_size,
    )
    layer = nn.Module()
    method.create_weights(layer, input_size, output_size, torch.float32)
    method.load_weight(layer, weight)
    return layer


def _float32_kernel(layer: nn.Module) -> Call:
    """The layer's kernel called on float32 activations, as `apply` no longer does."""
    if hasattr(layer, "scales_and_zeros"):  # int4
        group_size = layer.qweight.shape[1] * 2 // layer.scales_and_zeros.shape[0]
        return lambda x: torch.ops.aten._weight_int4pack_mm_for_cpu(
            x, layer.qweight, group_size, layer.scales_and_zeros
        )
    return lambda x: torch.ops.aten._weight_int8pack_mm(x, layer.qweight[0], layer.scales[0])


def _median_us(call: Call, x: torch.Tensor, samples: int) -> float:
    call(x)  # first-call costs
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        call(x)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results")
    args = parser.parse_args()
    torch.manual_seed(0)
    lines = [
        "# Packed int4/int8 kernels: float32 activations against bfloat16 ones",
        "",
        f"Commit {git_commit()}, torch {torch.__version__}, {cpu_description()}. Median of "
        f"{args.samples} calls, microseconds; a float32 model's activations in both cases (the "
        "bfloat16 columns include the conversions at the layer's edges). int4: groups of "
        f"{INT4_GROUP_SIZE} (GGUF Q4); int8: per channel.",
        "",
        "| layer | tokens | dense fp32 | int4, fp32 kernel | int4, fp32 dequantized | "
        "int4, bf16 kernel | int8, fp32 kernel | int8, fp32 dequantized | int8, bf16 kernel |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, input_size, output_size in SHAPES:
        dense = torch.randn(output_size, input_size)
        calls: dict[str, Call] = {"dense": lambda x, w=dense: F.linear(x, w)}
        for bits in (4, 8):
            for kernel_dtype, label in ((None, "fp32"), (torch.bfloat16, "bf16")):
                method = (
                    Int4LinearMethod(INT4_GROUP_SIZE, kernel_dtype=kernel_dtype)
                    if bits == 4
                    else Int8LinearMethod(None, symmetric=True, kernel_dtype=kernel_dtype)
                )
                layer = _packed_layer(method, input_size, output_size, bits)
                calls[f"int{bits} {label}"] = lambda x, m=method, p=layer: m.apply(p, x, None)
                if kernel_dtype is None:
                    calls[f"int{bits} fp32 kernel"] = _float32_kernel(layer)
        for num_tokens in NUM_TOKENS:
            x = torch.randn(num_tokens, input_size)
            us = {key: _median_us(call, x, args.samples) for key, call in calls.items()}
            cells = [f"{us['dense']:.0f}"]
            for key in COLUMNS:
                cells.append(f"{us[key]:.0f} ({us['dense'] / us[key]:.2f}x dense)")
            lines.append(
                f"| {name} {input_size}->{output_size} | {num_tokens} | " + " | ".join(cells) + " |"
            )
            print(lines[-1], flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "quantized_kernel_dtype.md").write_text("\n".join([*lines, ""]))


if __name__ == "__main__":
    main()
