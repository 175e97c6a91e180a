#!/usr/bin/env python3
"""A WRITTEN MODEL, not a measurement: the decode step of Llama-2-70B (bfloat16, batch 1) on 2,
4 and 8 GPUs with tensor parallelism, from the bytes each GPU reads, its memory bandwidth and
the latency of the two all-reduces per layer, set beside gpt-fast's published figures for the
same model on 8xA100-80GB. Its point is the share of a step that the collectives take as the
shards multiply, which is what decides where tensor parallelism pays.

Usage: .venv/bin/python bench/tensor_parallel_model.py
Writes bench/results/tensor_parallel_model.md."""

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Llama-2-70B's shape (its config.json).
LAYERS, HIDDEN, INTERMEDIATE, HEADS, KV_HEADS, VOCAB = 80, 8192, 28672, 64, 8, 32000
HEAD_DIM = HIDDEN // HEADS
BYTES_PER_WEIGHT = 2  # bfloat16
ALL_REDUCES_PER_LAYER = 2  # after attention's o_proj and after the MLP's down_proj


@dataclass(frozen=True)
class Gpu:
    name: str
    bandwidth: float
    """Bytes/s a decode step's weight reads achieve."""
    source: str


GPUS = (
    Gpu(
        "A100-80GB at 330 W",
        1.7e12,
        "gpt-fast's README: 'empirically, peak bandwidth is about 1700 GB/s' on its "
        "power-limited A100s",
    ),
    Gpu("H100 SXM", 3.35e12 * 0.85, "3.35 TB/s HBM3 datasheet figure at 85% efficiency (assumed)"),
)
ALL_REDUCE_LATENCIES = (6e-6, 20e-6)
"""Seconds per small (16 KB) all-reduce: 6 us is NCCL's NVLS tree on 2 H100s with CUDA graphs
(NVIDIA/nccl#1259); 20 us stands for 8 GPUs without CUDA graphs (assumed)."""
GPT_FAST_A100 = {2: 21.32, 4: 38.01, 8: 62.50}
"""gpt-fast's README, Llama-2-70B bfloat16, batch 1, tensor parallel on 8xA100-80GB: tokens/s."""


def weight_bytes() -> int:
    attention = HIDDEN * (HEADS + 2 * KV_HEADS) * HEAD_DIM + HEADS * HEAD_DIM * HIDDEN
    mlp = 3 * HIDDEN * INTERMEDIATE
    embeddings = 2 * VOCAB * HIDDEN  # untied embedding and LM head
    return (LAYERS * (attention + mlp) + embeddings) * BYTES_PER_WEIGHT


def step_seconds(gpu: Gpu, shards: int, latency: float) -> tuple[float, float]:
    """(step time, of which collectives) for one decode step at batch 1."""
    read = weight_bytes() / shards / gpu.bandwidth
    collectives = LAYERS * ALL_REDUCES_PER_LAYER * latency if shards > 1 else 0.0
    return read + collectives, collectives


def main() -> None:
    total = weight_bytes()
    lines = [
        "# Tensor parallelism on big machines: a written model, not a measurement",
        "",
        f"Llama-2-70B in bfloat16 ({total / 1e9:.0f} GB of weights, {LAYERS} layers), one "
        "sequence (batch 1). A decode step reads each GPU's share of the weights once and runs "
        f"{ALL_REDUCES_PER_LAYER} all-reduces of a {HIDDEN}-wide row per layer: step = "
        "weights / shards / bandwidth + layers x 2 x all-reduce latency. Kernel launches, "
        "attention over the cache and the LM head's gather are left out, so the model is an "
        "upper bound on tokens/s. Inputs:",
        "",
        *(f"- {gpu.name}: {gpu.bandwidth / 1e12:.2f} TB/s ({gpu.source})." for gpu in GPUS),
        "- All-reduce latency: "
        + " or ".join(f"{latency * 1e6:.0f} us" for latency in ALL_REDUCE_LATENCIES)
        + " (6 us: NCCL NVLS tree, 2 H100s, CUDA graphs, NVIDIA/nccl#1259; 20 us: assumed for 8"
        " GPUs without CUDA graphs).",
        "",
        "| GPU | shards | all-reduce latency | step, ms | of which collectives | model tokens/s "
        "| gpt-fast, measured tokens/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for gpu in GPUS:
        for shards in (2, 4, 8):
            for latency in ALL_REDUCE_LATENCIES:
                step, collectives = step_seconds(gpu, shards, latency)
                measured = GPT_FAST_A100.get(shards) if gpu is GPUS[0] else None
                lines.append(
                    f"| {gpu.name} | {shards} | {latency * 1e6:.0f} us | {step * 1e3:.1f} | "
                    f"{collectives / step:.0%} | {1 / step:.1f} | "
                    f"{'' if measured is None else f'{measured:.1f}'} |"
                )
    ratios = [
        GPT_FAST_A100[shards] * step_seconds(GPUS[0], shards, ALL_REDUCE_LATENCIES[-1])[0]
        for shards in GPT_FAST_A100
    ]
    layer_read_us = weight_bytes() / LAYERS / 8 / GPUS[0].bandwidth * 1e6
    lines += [
        "",
        f"gpt-fast's figures are {min(ratios):.0%}-{max(ratios):.0%} of the model's with "
        f"{ALL_REDUCE_LATENCIES[-1] * 1e6:.0f} us all-reduces: what the model leaves out "
        "costs that much. As shards multiply, the read time falls as 1/shards while the "
        "collectives stay (160 a step), so their share grows from a few percent at 2 shards to "
        "a quarter at 8 with 20 us all-reduces; at 8 shards a layer's reads take "
        f"{layer_read_us:.0f} us on the A100 against its two all-reduces. Tensor parallelism "
        "pays while a layer's reads dwarf its all-reduces, and stops paying where the two "
        "meet.",
        "",
        "On a CPU the same arithmetic decides: the README's section on tensor parallelism "
        "sets this model beside what 2 shards measure on this project's 2-core machine.",
        "",
    ]
    output = ROOT / "bench/results/tensor_parallel_model.md"
    output.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
