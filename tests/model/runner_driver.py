"""Drives a ModelRunner for parity tests: directly (no scheduler), one request at a time with
blocks handed out in order; or through the real scheduler, many requests together."""

from pathlib import Path

import torch

from sluice.distributed.parallel_context import SINGLE_DEVICE
from sluice.engine.drafts import Drafter
from sluice.engine.kv_cache.manager import KVCacheManager
from sluice.engine.request import Request
from sluice.engine.scheduler import Scheduler, SchedulerLimits
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


def generate(
    runner: ModelRunner,
    prompts: list[list[int]],
    sampling: list[SamplingParams],
    *,
    run: str,
    speculate: int = 0,
    max_step_tokens: int = 512,
) -> tuple[list[list[int]], int]:
    """Outputs of all requests run together by the scheduler, and how many drafts were
    accepted. `run` keeps request ids apart: the runner keeps a seeded request's generator
    under its id."""
    num_blocks = runner.kv_caches[0].shape[2] // BLOCK_SIZE
    scheduler = Scheduler(
        SchedulerLimits(max_step_tokens, max_prompt_tokens_while_decoding=max_step_tokens),
        KVCacheManager(num_blocks, BLOCK_SIZE, prefix_caching=False),
        Drafter(speculate, max_step_tokens=64) if speculate else None,
    )
    requests = [
        Request(f"{run}-{i}", prompt, params)
        for i, (prompt, params) in enumerate(zip(prompts, sampling, strict=True))
    ]
    for request in requests:
        scheduler.add_request(request)
    accepted = 0
    while scheduler.has_work:
        plan = scheduler.schedule()
        output = runner.execute(plan)
        accepted += sum(len(token.accepted_token_ids) for token in output.sampled)
        scheduler.update(plan, output)
    return [r.output_token_ids for r in requests], accepted
