#!/usr/bin/env python3
"""Matmul time of one linear layer quantized at load time: dense bf16 `F.linear` against NF4,
FP4, int8 (per channel) and fp8 (e4m3, per channel) from `load_dense`, on SmolLM2-135M's MLP
shapes, at 1 and 64 tokens.

Usage: .venv/bin/python bench/quantized_matmul_on_the_fly.py [--threads 2] [--samples 21]
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
from sluice.quantization.fp8 import Fp8LinearMethod
from sluice.quantization.nf4 import Nf4LinearMethod
from sluice.quantization.rtn import Int8OnTheFlyLinearMethod

# (name, input_size, output_size) of SmolLM2-135M's MLP (hidden 576, intermediate 1536).
SHAPES = (("gate/up_proj", 576, 1536), ("down_proj", 1536, 576))
NUM_TOKENS = (1, 64)
Method = Nf4LinearMethod | Int8OnTheFlyLinearMethod | Fp8LinearMethod
Call = Callable[[torch.Tensor], torch.Tensor]


def _methods() -> dict[str, Callable[[], Method]]:
    return {
        "nf4": partial(Nf4LinearMethod, "nf4"),
        "fp4": partial(Nf4LinearMethod, "fp4"),
        "int8": Int8OnTheFlyLinearMethod,
        "fp8": Fp8LinearMethod,
    }


def _quantized_call(method: Method, weight: torch.Tensor) -> tuple[Call, int]:
    """The method's matmul on `weight`, and the bytes of its parameters."""
    layer = nn.Module()
    output_size, input_size = weight.shape
    method.create_weights(layer, input_size, output_size, torch.bfloat16)
    method.load_dense(layer, weight)
    weight_bytes = sum(p.numel() * p.element_size() for p in layer.parameters())
    return (lambda x: method.apply(layer, x, None)), weight_bytes


def _median_us(call: Call, x: torch.Tensor, samples: int) -> float:
    loops = 20 if x.shape[0] == 1 else 5
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
    names = list(_methods())
    print("| layer | in -> out | tokens | dense bf16 µs | " + " | ".join(names) + " |")
    print("|---|---|---|---|" + "---|" * len(names))
    for name, input_size, output_size in SHAPES:
        weight = torch.randn(output_size, input_size) * 0.02
        dense = weight.bfloat16()
        calls = {key: _quantized_call(make(), weight) for key, make in _methods().items()}
        for num_tokens in NUM_TOKENS:
            x = torch.randn(num_tokens, input_size).bfloat16()
            dense_us = _median_us(partial(F.linear, weight=dense), x, args.samples)
            cells = [
                _cell(_median_us(call, x, args.samples), weight_bytes, dense_us)
                for call, weight_bytes in calls.values()
            ]
            print(
                f"| {name} | {input_size} -> {output_size} | {num_tokens} | "
                f"{_cell(dense_us, dense.numel() * 2)} | " + " | ".join(cells) + " |"
            )
    print(f"\nload average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
