"""Drives a ModelRunner directly (no scheduler) for parity tests: one request at a time,
blocks handed out in order."""

from pathlib import Path

import torch

from sluice.distributed.parallel_context import SINGLE_DEVICE
from sluice.model.attention.paged import PagedAttentionBackend
from sluice.model.kv_cache import KVCacheSpec
from sluice.model.loader import load_model, read_hf_config
from sluice.model.runner import ModelRunner
from sluice.model.step import ScheduledRequest, StepPlan
from sluice.sampling_params import SamplingParams

BLOCK_SIZE = 16


def build_runner(path: Path, dtype: torch.dtype, num_blocks: int = 64) -> ModelRunner:
    device = torch.device("cpu")
    backend = PagedAttentionBackend()
    config = read_hf_config(path)
    model = load_model(
        path, config, dtype=dtype, device=device, parallel=SINGLE_DEVICE, backend=backend
    )
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    spec = KVCacheSpec(config.num_hidden_layers, config.num_key_value_heads, head_dim, dtype)
    return ModelRunner(
        model, backend, spec.allocate(num_blocks, BLOCK_SIZE, device), BLOCK_SIZE, device
    )


def prefill_logits(
    runner: ModelRunner, token_ids: list[int], chunk: int | None = None
) -> torch.Tensor:
    """Logits at every prompt position, computed in chunks of `chunk` tokens."""
    blocks = tuple(range(-(-len(token_ids) // BLOCK_SIZE)))
    chunk = chunk or len(token_ids)
    rows = []
    for start in range(0, len(token_ids), chunk):
        piece = tuple(token_ids[start : start + chunk])
        plan = StepPlan((ScheduledRequest("r", piece, start, len(token_ids), blocks, None),))
        with torch.inference_mode():
            hidden = runner.forward(plan)
        rows.append(runner.model.compute_logits(hidden))
    return torch.cat(rows)


def greedy_generate(runner: ModelRunner, prompt: list[int], max_new_tokens: int) -> list[int]:
    params = SamplingParams(max_new_tokens=max_new_tokens)
    blocks = tuple(range(-(-(len(prompt) + max_new_tokens) // BLOCK_SIZE)))
    tokens = list(prompt)
    pending: tuple[int, ...] = tuple(prompt)
    for _ in range(max_new_tokens):
        plan = StepPlan(
            (
                ScheduledRequest(
                    "r", pending, len(tokens) - len(pending), len(prompt), blocks, params
                ),
            )
        )
        (sampled,) = runner.execute(plan).sampled
        tokens.append(sampled.token_id)
        pending = (sampled.token_id,)
    return tokens[len(prompt) :]
