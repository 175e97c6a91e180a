"""`sluice quantize`: quantize a model on the shipped calibration text with GPTQ (a standard GPTQ v1
checkpoint) or AWQ's scale search (an AutoAWQ GEMM checkpoint). Loads the model with transformers
in float32 on CPU; progress goes to the log (stderr). User mistakes raise ConfigError before any
model is loaded."""

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from sluice.errors import ConfigError
from sluice.quantization.awq_search import awq_quantize_model
from sluice.quantization.awq_writer import write_awq_checkpoint
from sluice.quantization.calibration import ShippedText, read_text, token_windows
from sluice.quantization.gptq_algorithm import GptqParams
from sluice.quantization.gptq_writer import write_gptq_checkpoint
from sluice.quantization.sequential import quantize_model

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class QuantizeOptions:
    """`sluice quantize`'s flags."""

    model_id: str
    revision: str | None
    output: Path
    method: str = "gptq"
    """`gptq` or `awq`."""
    bits: int = 4
    group_size: int = 128
    act_order: bool = False
    sym: bool = False
    clip_search: bool = False
    calibration_samples: int = 16
    seq_len: int = 512


def run_quantize(options: QuantizeOptions) -> int:
    """Quantize options.model_id into options.output; returns the process exit code."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sluice.weights.sources import resolve_model

    params = _params(options)
    if options.calibration_samples < 1 or options.seq_len < 1:
        raise ConfigError(
            f"`--calibration-samples` ({options.calibration_samples}) and `--seq-len` "
            f"({options.seq_len}) must be at least 1"
        )
    _prepare_output(options.output)
    started = time.perf_counter()
    resolved = resolve_model(options.model_id, options.revision, show_progress=True)
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    text_ids = tokenizer(read_text(ShippedText.CALIBRATION), return_tensors="pt", verbose=False)
    try:
        windows = token_windows(
            text_ids["input_ids"][0], options.calibration_samples, options.seq_len
        )
    except ValueError as error:
        raise ConfigError(f"`--seq-len`: {error}") from None
    logger.info(
        "calibrating on %d samples of %d tokens from the shipped text (%d tokens)",
        windows.shape[0],
        windows.shape[1],
        text_ids["input_ids"].shape[1],
    )
    model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=torch.float32)
    model.eval()
    try:
        if options.method == "awq":
            results, norms = awq_quantize_model(model, windows, params)
            write_awq_checkpoint(resolved.path, options.output, results, norms, params.group_size)
        else:
            results = quantize_model(model, windows, params)
            write_gptq_checkpoint(resolved.path, options.output, results, params)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    size = sum(path.stat().st_size for path in options.output.iterdir())
    logger.info(
        "wrote %d quantized linears to %s (%.1f MB) in %.0fs",
        len(results),
        options.output,
        size / 1e6,
        time.perf_counter() - started,
    )
    return 0


def _params(options: QuantizeOptions) -> GptqParams:
    if options.method not in ("gptq", "awq"):
        raise ConfigError(f"`--method` must be gptq or awq, got {options.method}")
    if options.method == "awq" and (options.bits != 4 or options.act_order or options.sym):
        raise ConfigError(
            "AWQ checkpoints are 4-bit with zero points, in input order: `--method awq` takes "
            "no `--bits` other than 4, no `--act-order` and no `--sym`"
        )
    if options.method == "awq" and options.group_size == -1:
        raise ConfigError("`--method awq` needs groups: pass a positive `--group-size`")
    if options.bits not in (4, 8):
        raise ConfigError(f"`--bits` must be 4 or 8, got {options.bits}")
    if options.group_size == 0 or options.group_size < -1:
        raise ConfigError(
            f"`--group-size` must be -1 (per channel) or positive, got {options.group_size}"
        )
    return GptqParams(
        options.bits,
        options.group_size,
        options.sym,
        options.act_order,
        clip_search=options.clip_search,
    )


def _prepare_output(output: Path) -> None:
    """An empty, writable directory, created if missing: never overwrite a previous result."""
    if output.exists() and not output.is_dir():
        raise ConfigError(f"`--output` {output} exists and is not a directory")
    if output.is_dir() and any(output.iterdir()):
        raise ConfigError(f"`--output` directory {output} is not empty")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"cannot create `--output` directory {output}: {error.strerror}"
        ) from None
    if not os.access(output, os.W_OK | os.X_OK):
        raise ConfigError(f"`--output` directory {output} is not writable")
