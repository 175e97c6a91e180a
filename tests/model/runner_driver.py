"""Drives a ModelRunner for parity tests: directly (no scheduler), one request at a time with
blocks handed out in order; or through the real scheduler, many requests together."""

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from sluice.cpu import bfloat16_support
from sluice.distributed.parallel_context import SINGLE_DEVICE, ParallelContext
from sluice.engine.drafts import Drafter
from sluice.engine.kv_cache.manager import KVCacheManager
from sluice.engine.request import Request
from sluice.engine.scheduler import Scheduler, SchedulerLimits
from sluice.model.attention.in_place import attention_backend_for
from sluice.model.batch_invariance import model_is_batch_invariant
from sluice.model.kernels import cpu_kernels
from sluice.model.kv_cache import KVCacheSpec
from sluice.model.loader import load_model, read_hf_config
from sluice.model.runner import ModelRunner
from sluice.model.step import ScheduledRequest, StepPlan
from sluice.quantization.scheme import resolve_scheme
from sluice.sampling_params import SamplingParams
from sluice.speculative.draft_model import DraftModel

BLOCK_SIZE = 16
TEST_DEVICE = torch.device(os.environ.get("SLUICE_TEST_DEVICE", "cpu"))
"""Where the model runs: the CPU unless `SLUICE_TEST_DEVICE` names another (`cuda` on a GPU
machine runs the same parity tests there; references stay on the CPU)."""


def build_runner(
    path: Path,
    dtype: torch.dtype,
    num_blocks: int = 64,
    quantize: str | None = None,
    kernel_dtype: torch.dtype | None = None,
    parallel: ParallelContext = SINGLE_DEVICE,
    pack_weights: bool = True,
) -> ModelRunner:
    """`pack_weights=False`: dense weights as loaded, to change before `pack_dense_weights`.
    `quantize`: as `--quantize`; the checkpoint's own scheme applies regardless, its packed
    kernels computing in `kernel_dtype` (None: `dtype`). `parallel`: the shard to build, in a
    process that has joined the shards' group."""
    device = TEST_DEVICE
    backend = attention_backend_for(device)
    config = read_hf_config(path)
    model = load_model(
        path,
        config,
        dtype=dtype,
        device=device,
        parallel=parallel,
        backend=backend,
        quantization=resolve_scheme(quantize, path, kernel_dtype=kernel_dtype),
        pack_weights=pack_weights,
    )
    spec = KVCacheSpec.for_model(config, dtype, parallel)
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
    return torch.cat(rows).cpu()


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


def skip_unless_batch_invariant(runner: ModelRunner, dtype: torch.dtype) -> None:
    """The README promises load-independent greedy output only where the kernels give a row
    the same bits alone and among others (the engine's start-up check): everywhere the C++
    kernels build, and for bfloat16 on some CPUs without them; elsewhere the test does not
    apply."""
    if not model_is_batch_invariant(runner.model, runner.backend, dtype):
        pytest.skip(
            f"the {dtype} kernels here (C++ kernels built: {cpu_kernels() is not None}; "
            f"bfloat16: {bfloat16_support()}) round a row differently among other rows"
        )


def build_draft_model(
    path: Path, dtype: torch.dtype, num_blocks: int, pack_weights: bool = True
) -> DraftModel:
    """A draft model over its own KV cache of `num_blocks` blocks (the target's count)."""
    runner = build_runner(path, dtype, num_blocks, pack_weights=pack_weights)
    return DraftModel(runner.model, runner.backend, runner.kv_caches, BLOCK_SIZE, runner.device)


@dataclass(frozen=True, slots=True)
class Generated:
    outputs: list[list[int]]
    num_drafted: int
    num_accepted: int


def generate(
    runner: ModelRunner,
    prompts: list[list[int]],
    sampling: list[SamplingParams],
    *,
    run: str,
    speculate: int = 0,
    max_step_tokens: int = 512,
    kv_cache: KVCacheManager | None = None,
) -> Generated:
    """All requests run together by the scheduler. `run` keeps request ids apart: the runner
    keeps a seeded request's generator under its id. With `speculate`, drafts come from the
    runner's draft model if it has one, else from n-gram lookup. `kv_cache`: a block manager
    to share between calls (by default a fresh one without prefix caching)."""
    if kv_cache is None:
        num_blocks = runner.kv_caches[0].shape[2] // BLOCK_SIZE
        kv_cache = KVCacheManager(num_blocks, BLOCK_SIZE, prefix_caching=False)
    scheduler = Scheduler(
        SchedulerLimits(max_step_tokens, max_prompt_tokens_while_decoding=max_step_tokens),
        kv_cache,
        Drafter(speculate, max_step_tokens=64, draft_model=runner.draft_model)
        if speculate
        else None,
    )
    requests = [
        Request(f"{run}-{i}", prompt, params)
        for i, (prompt, params) in enumerate(zip(prompts, sampling, strict=True))
    ]
    for request in requests:
        scheduler.add_request(request)
    drafted = accepted = 0
    while scheduler.has_work:
        plan = scheduler.schedule()
        output = runner.execute(plan)
        drafted += sum(r.num_draft_tokens for r in plan.requests)
        accepted += sum(len(token.accepted_token_ids) for token in output.sampled)
        scheduler.update(plan, output)
    return Generated([r.output_token_ids for r in requests], drafted, accepted)
