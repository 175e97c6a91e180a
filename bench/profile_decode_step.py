#!/usr/bin/env python3
"""Where a decode step's time goes: the runner alone (no server, no HTTP), on the default model,
for a batch of requests that each already hold `--context` tokens in the KV cache.

Usage: .venv/bin/python bench/profile_decode_step.py [--batch 64] [--context 160]
    [--dtype bfloat16] [--quantize gguf] [--backend in_place|paged|reference] [--drafts 0]
    [--no-packing] [--markdown FILE]
Without `--dtype`, the server's default dtype; the packed layers of `--quantize` compute in the
dtype the server would give them (`packed_kernel_dtype`).
Prints the CPU, the step time (median of `--steps`), the floor from bytes and FLOPs at this
machine's bandwidth and matmul rate (measured first, here), and the top operators by self CPU
time; with `--markdown`, appends the same as a section of FILE, operators grouped by what they
do. Nothing else heavy may run meanwhile."""

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from sluice.bench.local_server import git_commit
from sluice.bench.machine import GEMM_SIZE, cpu_description, measure_rates
from sluice.distributed.parallel_context import SINGLE_DEVICE, ParallelContext
from sluice.model.attention.backend import AttentionBackend
from sluice.model.attention.in_place import InPlaceAttentionBackend
from sluice.model.attention.paged import PagedAttentionBackend
from sluice.model.attention.torch_sdpa import TorchSdpaBackend
from sluice.model.kernel_packing import packs_weights
from sluice.model.kv_cache import KVCacheSpec
from sluice.model.loader import DTYPES, load_model, read_hf_config, resolve_dtype
from sluice.model.runner import ModelRunner
from sluice.model.step import ScheduledRequest, StepPlan
from sluice.quantization.scheme import QuantizationScheme, packed_kernel_dtype, resolve_scheme
from sluice.sampling_params import SamplingParams
from sluice.weights import resolve_model

BLOCK_SIZE = 16
PROFILED_STEPS = 3
OPERATOR_GROUPS = {
    "weight matmuls (incl. the LM head)": (
        "aten::mm",
        "aten::addmm",
        "mkldnn::_linear",
        "packed_linear",
    ),
    "attention: gathering K/V blocks": ("aten::index_select",),
    "attention: batched matmuls": ("aten::bmm",),
    "attention: in-place kernel": ("paged_attention",),
    "writing new K/V": ("aten::index_copy_", "write_kv"),
    "RMSNorm, rotary, SiLU (C++ kernels)": ("add_rms_norm", "rotary_embedding", "silu_and_mul"),
    "sampling (argmax, log-softmax)": ("aten::argmax", "aten::_log_softmax"),
}
"""Profiler keys (substrings) of each group of operators."""


BACKENDS: dict[str, Callable[[], AttentionBackend]] = {
    "in_place": InPlaceAttentionBackend.built_here,
    "paged": PagedAttentionBackend,
    "reference": TorchSdpaBackend,
}


def _weights_read_per_step(model: torch.nn.Module) -> tuple[int, int]:
    """(elements, bytes) of the weights a decode step reads: all but the embedding table (a
    lookup reads a row of it), the LM head's packed copy of it where there is one."""
    embedding = model.embed_tokens.weight  # type: ignore[union-attr]
    head = model.lm_head  # type: ignore[union-attr]
    tied_and_unpacked = head.weight is embedding and head.packed_weight is None
    read = [p for p in model.parameters() if p is not embedding or tied_and_unpacked]
    return sum(p.numel() for p in read), sum(p.numel() * p.element_size() for p in read)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--context", type=int, default=160)
    parser.add_argument("--dtype", choices=sorted(DTYPES))
    parser.add_argument("--quantize", choices=("gguf",))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--backend", default="in_place", choices=sorted(BACKENDS))
    parser.add_argument(
        "--drafts", type=int, default=0, help="draft tokens each request verifies per step"
    )
    parser.add_argument(
        "--no-packing", action="store_true", help="dense float32 weights as loaded (F.linear)"
    )
    parser.add_argument("--markdown", type=Path, help="append the results to this file")
    args = parser.parse_args()
    cpu = torch.device("cpu")
    dtype = resolve_dtype(args.dtype, cpu)
    dtype_name = str(dtype).removeprefix("torch.")
    rates = measure_rates((dtype,))
    matmul_rate = rates.gemm_flops_per_s[dtype_name]
    print(
        f"{cpu_description()}\nmeasured: copy {rates.copy_bytes_per_s / 1e9:.1f} GB/s, "
        f"read {rates.read_bytes_per_s / 1e9:.1f} GB/s, {dtype_name} GEMM "
        f"{matmul_rate / 1e9:.0f} GFLOP/s ({GEMM_SIZE}-square)"
    )
    backend = BACKENDS[args.backend]()
    path = resolve_model().path
    quantization = resolve_scheme(
        args.quantize, path, kernel_dtype=packed_kernel_dtype(args.dtype, dtype, cpu)
    )
    runner = build_runner(
        path,
        backend,
        dtype,
        quantization,
        args.batch,
        args.context + args.drafts,
        pack_weights=not args.no_packing,
    )
    plan = decode_plan(args.batch, args.context, args.drafts)
    runner.execute(prefill_plan(args.batch, args.context))  # fill the cache once
    for _ in range(2):
        runner.execute(plan)
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        runner.execute(plan)
        times.append(time.perf_counter() - started)
    step = statistics.median(times)
    num_params, weight_bytes = _weights_read_per_step(runner.model)
    flops = 2 * num_params * args.batch
    # A decode step reads every weight once: the read bandwidth bounds it at small batches.
    floor = max(flops / matmul_rate, weight_bytes / rates.read_bytes_per_s)
    packed = packs_weights(dtype, cpu) and not args.no_packing
    title = (
        f"{args.backend} attention, {'packed' if packed else 'F.linear'} weights, "
        f"batch {args.batch}, context {args.context}, {dtype_name}"
        f"{'' if quantization is None else ', --quantize ' + quantization.method}"
    )
    summary = (
        f"step {step * 1000:.1f} ms ({min(times) * 1000:.1f}-{max(times) * 1000:.1f}), "
        f"{args.batch / step:.0f} tokens/s; floor {floor * 1000:.1f} ms "
        f"({flops / 1e9:.1f} GFLOP, {weight_bytes / 1e6:.0f} MB of weights)"
    )
    print(f"{title}, {torch.get_num_threads()} threads: {summary}")
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(PROFILED_STEPS):
            runner.execute(plan)
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))
    if args.markdown is not None:
        rates_line = (
            f"measured here: copy {rates.copy_bytes_per_s / 1e9:.1f} GB/s, read "
            f"{rates.read_bytes_per_s / 1e9:.1f} GB/s, {dtype_name} GEMM "
            f"{matmul_rate / 1e9:.0f} GFLOP/s"
        )
        section = _markdown_section(title, summary, rates_line, profiler, step)
        with args.markdown.open("a") as file:
            file.write(section)


def _markdown_section(
    title: str, summary: str, rates_line: str, profiler: profile, step_s: float
) -> str:
    """The step's figures and its operators' self time per step, grouped by `OPERATOR_GROUPS`."""
    per_group: dict[str, float] = dict.fromkeys([*OPERATOR_GROUPS, "other operators"], 0.0)
    for event in profiler.key_averages():
        group = next(
            (name for name, keys in OPERATOR_GROUPS.items() if any(k in event.key for k in keys)),
            "other operators",
        )
        per_group[group] += event.self_cpu_time_total / 1e3 / PROFILED_STEPS
    rest = step_s * 1e3 - sum(per_group.values())
    lines = [
        f"### {title}",
        "",
        f"Commit {git_commit()}; {cpu_description()}; {rates_line}. {summary}.",
        "",
        "| where | ms per step |",
        "|---|---|",
        *(f"| {name} | {ms:.1f} |" for name, ms in per_group.items()),
        f"| Python and dispatch (the rest of the step) | {max(rest, 0.0):.1f} |",
        "",
        "",
    ]
    return "\n".join(lines)


def build_runner(
    path: Path,
    backend: AttentionBackend,
    dtype: torch.dtype,
    quantization: QuantizationScheme | None,
    batch: int,
    context: int,
    parallel: ParallelContext = SINGLE_DEVICE,
    pack_weights: bool = True,
) -> ModelRunner:
    """A runner whose cache holds `batch` requests of `context` tokens; `parallel`: the
    shard to build, in a process that has joined the others."""
    config = read_hf_config(path)
    device = torch.device("cpu")
    model = load_model(
        path,
        config,
        dtype=dtype,
        device=device,
        parallel=parallel,
        backend=backend,
        quantization=quantization,
        pack_weights=pack_weights,
    )
    spec = KVCacheSpec.for_model(config, dtype, parallel)
    blocks_per_request = -(-(context + 1) // BLOCK_SIZE)
    caches = spec.allocate(batch * blocks_per_request, BLOCK_SIZE, device)
    return ModelRunner(model, backend, caches, BLOCK_SIZE, device)


def _blocks(index: int, context: int) -> tuple[int, ...]:
    per_request = -(-(context + 1) // BLOCK_SIZE)
    return tuple(range(index * per_request, (index + 1) * per_request))


def prefill_plan(batch: int, context: int) -> StepPlan:
    return StepPlan(
        tuple(
            ScheduledRequest(
                str(i), tuple(range(1, context + 1)), 0, context, _blocks(i, context), None
            )
            for i in range(batch)
        )
    )


def decode_plan(batch: int, context: int, drafts: int) -> StepPlan:
    """Each request decodes its next token, after `drafts` draft tokens to verify."""
    greedy = SamplingParams(max_new_tokens=1_000_000)
    tokens = (42,) * (drafts + 1)
    return StepPlan(
        tuple(
            ScheduledRequest(
                str(i),
                tokens,
                context,
                context,
                _blocks(i, context + drafts),
                greedy,
                num_draft_tokens=drafts,
            )
            for i in range(batch)
        )
    )


if __name__ == "__main__":
    main()
