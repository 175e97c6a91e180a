#!/usr/bin/env python3
"""Matmul time of one linear layer: dense bf16 `F.linear` against the int4 and int8 weight-only
methods of `sluice.quantization`, on SmolLM2-135M's projection shapes, at 1 and 64 tokens.

Usage: .venv/bin/python bench/quantized_matmul.py [--threads 2] [--samples 21]
Prints a markdown table (median per call over several samples, each sample a loop of calls).
Weights are random: the kernels' speed does not depend on the values."""

import argparse
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from sluice.bench.machine import cpu_description
from sluice.quantization import Int4LinearMethod, Int8LinearMethod, QuantizedWeight

# (name, input_size, output_size) of SmolLM2-135M (hidden 576, intermediate 1536, 3 KV heads).
SHAPES = (
    ("gate/up_proj", 576, 1536),
    ("down_proj", 1536, 576),
    ("q/o_proj", 576, 576),
    ("k/v_proj", 576, 192),
)
NUM_TOKENS = (1, 64)
INT4_GROUP_SIZE = 64  # the largest of 128/64 dividing both 576 and 1536


def _random_weight(
    output_size: int, input_size: int, bits: int, group_size: int
) -> QuantizedWeight:
    num_groups = input_size // group_size
    q = torch.randint(0, 2**bits, (output_size, input_size), dtype=torch.int32)
    scales = (torch.rand(num_groups, output_size) * 0.01 + 0.001).half()
    zeros = torch.full((num_groups, output_size), 2 ** (bits - 1), dtype=torch.int32)
    return QuantizedWeight(q, scales, zeros, bits, group_size)


Call = Callable[[torch.Tensor], torch.Tensor]


def _quantized_call(
    method: Int4LinearMethod | Int8LinearMethod,
    input_size: int,
    output_size: int,
    bits: int,
    group_size: int,
) -> tuple[Call, int]:
    """The method's matmul on a random weight, and the bytes of its parameters."""
    layer = nn.Module()
    method.create_weights(layer, input_size, output_size, torch.bfloat16)
    method.load_weight(layer, _random_weight(output_size, input_size, bits, group_size))
    weight_bytes = sum(p.numel() * p.element_size() for p in layer.parameters())
    return (lambda x: method.apply(layer, x, None)), weight_bytes


def _median_us(call: Call, x: torch.Tensor, samples: int) -> float:
    loops = 50 if x.shape[0] == 1 else 10
    for _ in range(loops):  # warm up caches and oneDNN's kernel choice
        call(x)
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        for _ in range(loops):
            call(x)
        times.append((time.perf_counter() - started) / loops)
    return statistics.median(times) * 1e6


def _cell(us: float, weight_bytes: int, dense_us: float | None = None) -> str:
    gbps = weight_bytes / us / 1e3
    speedup = "" if dense_us is None else f", {dense_us / us:.2f}x"
    return f"{us:.1f} ({gbps:.1f} GB/s{speedup})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=21)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(
        f"commit {commit}, torch {torch.__version__}, {cpu_description()}, "
        f"{torch.backends.cpu.get_cpu_capability()}, {args.threads} threads, "
        f"load average before {os.getloadavg()[0]:.2f}, median of {args.samples} samples\n"
    )
    print("| layer | in -> out | tokens | dense bf16 µs | int4 g64 µs | int8 per-channel µs |")
    print("|---|---|---|---|---|---|")
    for name, input_size, output_size in SHAPES:
        dense = torch.randn(output_size, input_size).bfloat16()
        int4, int4_bytes = _quantized_call(
            Int4LinearMethod(INT4_GROUP_SIZE), input_size, output_size, 4, INT4_GROUP_SIZE
        )
        int8, int8_bytes = _quantized_call(
            Int8LinearMethod(None, symmetric=True), input_size, output_size, 8, input_size
        )
        for num_tokens in NUM_TOKENS:
            x = torch.randn(num_tokens, input_size).bfloat16()
            dense_us = _median_us(partial(F.linear, weight=dense), x, args.samples)
            int4_us = _median_us(int4, x, args.samples)
            int8_us = _median_us(int8, x, args.samples)
            print(
                f"| {name} | {input_size} -> {output_size} | {num_tokens} | "
                f"{_cell(dense_us, dense.numel() * 2)} | {_cell(int4_us, int4_bytes, dense_us)} | "
                f"{_cell(int8_us, int8_bytes, dense_us)} |"
            )
    print(f"\nload average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
