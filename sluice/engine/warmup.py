"""Warm-up, as TGI's: before the KV cache is sized, run the largest step the scheduler may
plan (a prefill of `--max-batch-prefill-tokens` tokens) once, measure the memory its
activations took, and give the KV cache what is left. The run also pays the first-call costs
(kernel selection, allocator growth) before the first request arrives.

On a CPU the step would take seconds to tens of seconds, so a short prefill stands in for it:
its memory, scaled to the step's tokens, estimates the activations that grow with the tokens,
and the attention's masks and scores, which grow faster, are added from the shapes. Measured in
a fresh process (as at start-up) it covers what the whole step takes; on CPU the KV cache takes
a modest share of memory, so an estimate is enough."""

import contextlib
import ctypes
import os
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sluice.errors import SluiceError
from sluice.model.attention.backend import AttentionBackend
from sluice.model.kv_cache import KVCacheSpec
from sluice.model.runner import ModelRunner
from sluice.model.step import ScheduledRequest, StepPlan
from sluice.sampling_params import SamplingParams

CPU_KV_CACHE_MEMORY_FRACTION = 0.2
"""Of the memory available once the model is loaded and warmed up: a CPU server shares its
machine (a laptop, the API process), so it takes a modest share."""
CPU_KV_CACHE_MAX_BYTES = 2 << 30
CUDA_MEMORY_FRACTION = 0.9
"""Of the whole GPU; the rest stays free for other processes and fragmentation."""
CPU_MEASURED_PREFILL_TOKENS = 128
"""A prefill this long takes a fraction of a second on a 2-core CPU (1,024 tokens took 8 s)."""


@dataclass(frozen=True, slots=True)
class Warmup:
    num_tokens: int
    """The largest step's tokens, which `activation_bytes` is for."""
    activation_bytes: int
    """Peak memory that step needs beyond the model and its small warm-up cache."""
    measured_tokens: int
    """The tokens of the prefill that ran: `num_tokens`, or fewer on a CPU."""
    duration_s: float
    """How long that prefill took."""


def warm_up(
    model: nn.Module,
    backend: AttentionBackend,
    spec: KVCacheSpec,
    device: torch.device,
    *,
    num_tokens: int,
    max_positions: int,
    block_size: int,
) -> Warmup:
    """Find the activation memory of a prefill step of `num_tokens` tokens, split into prompts no
    longer than the model's context, by running it (or, on a CPU, a shorter one, see the
    module's docstring) over a cache just big enough for it."""
    measured_tokens = num_tokens
    if device.type == "cpu":
        measured_tokens = min(num_tokens, CPU_MEASURED_PREFILL_TOKENS)
    growth, duration_s = _run_prefill(
        model, backend, spec, device, measured_tokens, max_positions, block_size
    )
    activation_bytes = growth
    if measured_tokens < num_tokens:
        attention_bytes = backend.prompt_attention_bytes(
            model.config.num_attention_heads, _prompt_lengths(num_tokens, max_positions)
        )
        activation_bytes = -(-growth * num_tokens // measured_tokens) + attention_bytes
    return Warmup(num_tokens, activation_bytes, measured_tokens, duration_s)


def _prompt_lengths(num_tokens: int, max_positions: int) -> list[int]:
    """`num_tokens` tokens as prompts no longer than the model's context."""
    return [min(max_positions, num_tokens - start) for start in range(0, num_tokens, max_positions)]


def _run_prefill(
    model: nn.Module,
    backend: AttentionBackend,
    spec: KVCacheSpec,
    device: torch.device,
    num_tokens: int,
    max_positions: int,
    block_size: int,
) -> tuple[int, float]:
    """Peak memory growth and time of one prefill step of `num_tokens` tokens."""
    prompts = _prompt_lengths(num_tokens, max_positions)
    blocks_per_prompt = [-(-length // block_size) for length in prompts]
    caches = spec.allocate(sum(blocks_per_prompt), block_size, device)
    runner = ModelRunner(model, backend, caches, block_size, device)
    greedy = SamplingParams(max_new_tokens=1)
    vocab_size = model.config.vocab_size
    requests, first_block = [], 0
    for index, (length, num_blocks) in enumerate(zip(prompts, blocks_per_prompt, strict=True)):
        requests.append(
            ScheduledRequest(
                request_id=f"warmup-{index}",
                token_ids=tuple(position % vocab_size for position in range(length)),
                num_computed_tokens=0,
                num_prompt_tokens=length,
                block_ids=tuple(range(first_block, first_block + num_blocks)),
                sampling=greedy,
            )
        )
        first_block += num_blocks
    started = time.perf_counter()
    try:
        with _peak_memory_growth(device) as growth:
            runner.execute(StepPlan(tuple(requests)))
    except torch.OutOfMemoryError as error:
        raise SluiceError(
            f"Not enough memory to handle {num_tokens} prefill tokens. "
            "You need to decrease `--max-batch-prefill-tokens`"
        ) from error
    duration_s = time.perf_counter() - started
    del runner, caches
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return growth.bytes, duration_s


def kv_capacity_tokens(
    bytes_per_token: int, device: torch.device, warmup: Warmup, *, memory_share: float = 1.0
) -> int:
    """KV tokens of `bytes_per_token` each (the model's, plus a draft model's if there is one)
    that fit in the memory left once the models are loaded, keeping room for the activations
    of the largest step. `memory_share`: this process's part of a CPU host's memory, which
    the host's shards divide."""
    if device.type == "cuda":
        free_bytes, total_bytes = torch.cuda.mem_get_info(device)
        budget = free_bytes - int((1 - CUDA_MEMORY_FRACTION) * total_bytes)
    else:
        budget = int(
            memory_share
            * min(
                int(_available_memory_bytes() * CPU_KV_CACHE_MEMORY_FRACTION),
                CPU_KV_CACHE_MAX_BYTES,
            )
        )
    return max(0, budget - warmup.activation_bytes) // bytes_per_token


@dataclass(slots=True)
class _Growth:
    bytes: int = 0


@contextlib.contextmanager
def _peak_memory_growth(device: torch.device) -> Iterator[_Growth]:
    """How far this process's memory peaked above where it stood on entry."""
    growth = _Growth()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        yield growth
        growth.bytes = torch.cuda.max_memory_allocated(device) - before
        return
    _release_free_heap()
    resettable = _reset_peak_rss()
    before = _rss_bytes() if resettable else _peak_rss_bytes()
    yield growth
    growth.bytes = max(0, _peak_rss_bytes() - before)


def _release_free_heap() -> None:
    """Hand the memory that malloc keeps from freed allocations back to the kernel, so that
    the step's allocations grow the process's memory rather than reuse it unseen."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of this process's memory (Linux 4.0+)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _rss_bytes() -> int:
    return _status_kilobytes("VmRSS") * 1024


def _peak_rss_bytes() -> int:
    try:
        return _status_kilobytes("VmHWM") * 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status_kilobytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def _available_memory_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
