#!/usr/bin/env python3
"""Quantization methods against bfloat16, in the same run: weight bytes, peak RSS, perplexity
on the shipped evaluation text (measured in a fresh process per method, which also gives the
peak RSS), and over HTTP on a fresh server per method: W1 decode tokens/s (batch 1) and W2
output tokens/s (64 requests at once).

Methods: bf16 (the default model's Q4_1 GGUF dequantized at load, sluice's default); the same
GGUF's Q4_1 blocks served packed (`--quantize gguf`); int8 (`--quantize eetq`, quantized at
load); GPTQ 4-bit and AWQ 4-bit checkpoints (directories given with --gptq and --awq, as
`sluice quantize` writes them); NF4 (`--quantize bitsandbytes-nf4`); and any further
checkpoints given as --checkpoint NAME=DIR.

Usage: .venv/bin/python bench/quantization.py --gptq DIR --awq DIR [--checkpoint NAME=DIR]...
  [--runs 3]
Writes bench/results/quantization.md, .json and .png. Nothing else heavy may run meanwhile."""

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from sluice.bench.client import run_workload_blocking
from sluice.bench.local_server import git_commit, local_server
from sluice.bench.machine import cpu_description
from sluice.bench.stats import SingleStreamRun, Spread, ThroughputRun
from sluice.bench.workloads import load_workload
from sluice.distributed.parallel_context import SINGLE_DEVICE
from sluice.model.attention.paged import PagedAttentionBackend
from sluice.model.forward import forward_pass
from sluice.model.kv_cache import KVCacheSpec
from sluice.model.loader import load_model, read_hf_config
from sluice.model.step import ScheduledRequest
from sluice.quantization.calibration import ShippedText, read_text
from sluice.quantization.scheme import resolve_scheme
from sluice.weights import resolve_model

ROOT = Path(__file__).resolve().parent.parent
WINDOW = 1024
"""Perplexity is the mean next-token loss over consecutive windows of this many tokens."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gptq", type=Path, required=True, help="a GPTQ 4-bit checkpoint")
    parser.add_argument("--awq", type=Path, required=True, help="an AWQ 4-bit checkpoint")
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a further quantized checkpoint to measure, shown as NAME",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results")
    parser.add_argument(
        "--evaluate", nargs=2, metavar=("MODEL", "QUANTIZE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.evaluate:  # the child process of one method's offline figures
        model, quantize = args.evaluate
        print(json.dumps(evaluate(Path(model), None if quantize == "-" else quantize)))
        return
    default = str(resolve_model().path)
    methods: dict[str, tuple[str, str | None]] = {
        "bf16": (default, None),
        "GGUF Q4_1 packed": (default, "gguf"),
        "int8 (eetq)": (default, "eetq"),
        "GPTQ 4-bit": (str(args.gptq), None),
        "AWQ 4-bit": (str(args.awq), None),
        "NF4": (default, "bitsandbytes-nf4"),
    }
    for extra in args.checkpoint:
        name, _, path = extra.partition("=")
        methods[name] = (path, None)
    figures: dict[str, dict[str, Any]] = {}
    for name, (model, quantize) in methods.items():
        figures[name] = offline_figures(model, quantize)
        print(name, figures[name], flush=True)
    for run in range(args.runs):
        for name, (model, quantize) in methods.items():
            served = serve_figures(model, quantize)
            figures[name].setdefault("runs", []).append(served)
            print(f"run {run + 1}", name, served, flush=True)
    results = {
        "commit": git_commit(),
        "machine": cpu_description(),
        "methods": {
            name: {"model": m, "quantize": q, "checkpoint_config": _checkpoint_config(m)}
            for name, (m, q) in methods.items()
        },
        "figures": figures,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "quantization.json").write_text(json.dumps(results, indent=2))
    table = render(results)
    (args.output / "quantization.md").write_text(table)
    plot(results, args.output / "quantization.png")
    print(table)


def offline_figures(model: str, quantize: str | None) -> dict[str, Any]:
    """Weight bytes, perplexity and peak RSS, from a fresh process."""
    command = [sys.executable, __file__, "--gptq", "-", "--awq", "-"]
    command += ["--evaluate", model, quantize or "-"]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def evaluate(model_path: Path, quantize: str | None) -> dict[str, Any]:
    config = read_hf_config(model_path)
    device = torch.device("cpu")
    backend = PagedAttentionBackend()
    model = load_model(
        model_path,
        config,
        dtype=torch.bfloat16,
        device=device,
        parallel=SINGLE_DEVICE,
        backend=backend,
        quantization=resolve_scheme(quantize, model_path),
    )
    weight_bytes = sum(
        p.numel() * p.element_size()
        for name, p in model.named_parameters()
        if name.startswith("layers.")
    )
    spec = KVCacheSpec.for_model(config, torch.bfloat16)
    caches = spec.allocate(WINDOW // 16, 16, device)
    token_ids = AutoTokenizer.from_pretrained(model_path)(read_text(ShippedText.EVALUATION))[
        "input_ids"
    ]
    total_loss, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(token_ids) - WINDOW + 1, WINDOW):
            window = tuple(token_ids[start : start + WINDOW])
            request = ScheduledRequest("w", window, 0, WINDOW, tuple(range(WINDOW // 16)), None)
            hidden = forward_pass(model, backend, caches, 16, (request,), device)
            logits = model.compute_logits(hidden[:-1])
            targets = torch.tensor(window[1:])
            total_loss += torch.nn.functional.cross_entropy(logits, targets, reduction="sum").item()
            count += WINDOW - 1
    return {
        "decoder_weight_bytes": weight_bytes,
        "perplexity": float(torch.tensor(total_loss / count).exp()),
        "evaluated_tokens": count,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def serve_figures(model: str, quantize: str | None) -> dict[str, float]:
    w1, w2 = load_workload("w1"), load_workload("w2")
    flags = ["--model-id", model, *(["--quantize", quantize] if quantize else [])]
    with local_server(*flags) as url:
        run_workload_blocking(url, ("Hello",), 8, 1)
        single = SingleStreamRun.of(run_workload_blocking(url, w1.prompts, w1.max_new_tokens, 1))
        everything = len(w2.prompts)
        loaded = run_workload_blocking(url, w2.prompts, w2.max_new_tokens, everything)
    return {
        "w1_decode_tokens_per_s": single.decode_tokens_per_s,
        "w2_output_tokens_per_s": ThroughputRun.of(loaded).output_tokens_per_s,
    }


def render(results: dict[str, Any]) -> str:
    figures = results["figures"]
    base = figures["bf16"]
    lines = [
        "# Quantization against bfloat16",
        "",
        f"Commit {results['commit']}, {results['machine']}, the default model (SmolLM2-135M). "
        "Weight bytes are the decoder layers' (embeddings and LM head stay bfloat16 in every "
        "method). bf16 is the default model as sluice serves it: its Q4_1 GGUF dequantized at "
        "load, so it already carries one 4-bit rounding, which the other methods round again "
        "(all but GGUF Q4_1 packed, which runs the GGUF's own blocks). "
        "Perplexity: the shipped evaluation text (Austen, public domain), windows of "
        f"{WINDOW} tokens, bfloat16 activations. Peak RSS: the process that loaded the model "
        "and computed the perplexity. Tokens/s: fresh server per method and run, median "
        "(min-max) over runs; ratios against bf16 of the same run.",
        "",
        "| method | decoder weight bytes | vs bf16 | peak RSS | perplexity | vs bf16 | "
        "W1 decode tok/s | vs bf16 | W2 output tok/s | vs bf16 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, fig in figures.items():
        w1 = [run["w1_decode_tokens_per_s"] for run in fig["runs"]]
        w2 = [run["w2_output_tokens_per_s"] for run in fig["runs"]]
        w1_ratio = [a / b["w1_decode_tokens_per_s"] for a, b in zip(w1, base["runs"], strict=True)]
        w2_ratio = [a / b["w2_output_tokens_per_s"] for a, b in zip(w2, base["runs"], strict=True)]
        lines.append(
            f"| {name} | {fig['decoder_weight_bytes'] / 1e6:.1f} MB | "
            f"{fig['decoder_weight_bytes'] / base['decoder_weight_bytes']:.2f} | "
            f"{fig['peak_rss_bytes'] / 1e6:.0f} MB | {fig['perplexity']:.2f} | "
            f"{fig['perplexity'] / base['perplexity']:.3f} | {Spread.of(w1).format(1)} | "
            f"{Spread.of(w1_ratio).format(2)} | {Spread.of(w2).format(1)} | "
            f"{Spread.of(w2_ratio).format(2)} |"
        )
    lines += ["", "Checkpoints' `quantization_config`:", ""]
    for name, method in results["methods"].items():
        if method["checkpoint_config"]:
            lines.append(f"- {name}: `{json.dumps(method['checkpoint_config'])}`")
    return "\n".join([*lines, ""])


def _checkpoint_config(model: str) -> dict[str, Any] | None:
    config = json.loads((Path(model) / "config.json").read_text()).get("quantization_config")
    if not config:
        return None
    keys = ("quant_method", "bits", "group_size", "desc_act", "sym", "zero_point", "clip_search")
    return {key: config[key] for key in keys if key in config}


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = results["figures"]
    names = list(figures)
    panels = (
        ("decoder weights (MB)", [f["decoder_weight_bytes"] / 1e6 for f in figures.values()]),
        ("perplexity", [f["perplexity"] for f in figures.values()]),
        (
            "W1 decode tok/s (median)",
            [_median(f, "w1_decode_tokens_per_s") for f in figures.values()],
        ),
        (
            "W2 output tok/s (median)",
            [_median(f, "w2_output_tokens_per_s") for f in figures.values()],
        ),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(16, 4))
    for axis, (title, values) in zip(axes, panels, strict=True):
        axis.bar(names, values)
        axis.set_title(title)
        axis.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _median(figures: dict[str, Any], key: str) -> float:
    return Spread.of([run[key] for run in figures["runs"]]).median


if __name__ == "__main__":
    main()
