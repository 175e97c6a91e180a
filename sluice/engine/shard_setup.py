"""The start-up steps every shard runs alike, rank 0 (the engine) and the others: take this
host's share of the devices, join the other shards, load this shard's weights, warm up, and
size the KV cache to what the tightest shard can hold.

The order of the collectives in here is the same on every shard, so rank 0's extra steps (a
draft model, grammars, the scheduler) happen between these calls, never inside them."""

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import PretrainedConfig

from sluice.config import SluiceConfig
from sluice.distributed.parallel_context import SINGLE_DEVICE
from sluice.distributed.shard_group import (
    ShardGroups,
    join_shard_group,
    min_over_shards,
    wait_for_all_shards,
)
from sluice.distributed.topology import ShardPlacement
from sluice.engine.warmup import kv_capacity_tokens, warm_up
from sluice.model.attention.backend import AttentionBackend
from sluice.model.attention.in_place import attention_backend_for
from sluice.model.kv_cache import KVCacheSpec
from sluice.model.loader import load_model, read_hf_config, resolve_dtype
from sluice.quantization.scheme import packed_kernel_dtype, resolve_scheme

logger = logging.getLogger(__name__)

BLOCK_SIZE = 16


@dataclass(frozen=True, slots=True)
class Shard:
    """This process's part of the model, on its device."""

    model: nn.Module
    hf_config: PretrainedConfig
    spec: KVCacheSpec
    dtype: torch.dtype
    device: torch.device
    backend: AttentionBackend
    groups: ShardGroups | None
    """None when the model is not sharded."""
    num_local: int = 1
    """Shards on this host, which share its memory."""


def join_shards(placement: ShardPlacement | None) -> tuple[torch.device, ShardGroups | None]:
    """Take this shard's device (its GPU, or its share of the cores) and join the others."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if placement is None:
        return device, None
    if device.type == "cuda":
        device = torch.device("cuda", placement.local_index)
        torch.cuda.set_device(device)
    else:
        _take_core_share(placement.local_index, placement.num_local)
    groups = join_shard_group(placement.rank, placement.world_size, placement.master, device)
    logger.info("joined as shard %d of %d", placement.rank, placement.world_size)
    return device, groups


def load_shard(
    config: SluiceConfig,
    model_path: Path,
    device: torch.device,
    groups: ShardGroups | None,
    num_local: int = 1,
) -> Shard:
    model_config = config.model
    dtype = resolve_dtype(model_config.dtype, device)
    backend = attention_backend_for(device)
    hf_config = read_hf_config(model_path, trust_remote_code=model_config.trust_remote_code)
    parallel = SINGLE_DEVICE if groups is None else groups.parallel
    model = load_model(
        model_path,
        hf_config,
        dtype=dtype,
        device=device,
        parallel=parallel,
        backend=backend,
        quantization=resolve_scheme(
            model_config.quantize,
            model_path,
            kernel_dtype=packed_kernel_dtype(model_config.dtype, dtype, device),
        ),
    )
    spec = KVCacheSpec.for_model(hf_config, dtype, parallel)
    return Shard(model, hf_config, spec, dtype, device, backend, groups, num_local)


def size_kv_cache(shard: Shard, config: SluiceConfig, *, extra_bytes_per_token: int = 0) -> int:
    """Warm up, then give the KV cache what memory is left (as a share of this host among its
    shards), agreed as the smallest over all shards; returns its number of blocks.
    `extra_bytes_per_token`: a draft model's cache, which shares the blocks."""
    sched_config = config.scheduler
    if shard.groups is not None:
        wait_for_all_shards()  # every shard has loaded its weights
    warmup = warm_up(
        shard.model,
        shard.backend,
        shard.spec,
        shard.device,
        num_tokens=sched_config.max_batch_prefill_tokens,
        max_positions=shard.hf_config.max_position_embeddings,
        block_size=BLOCK_SIZE,
    )
    logger.info(
        "warm-up: a %d-token prefill took %.1fs; activations of a %d-token step: %.0f MB%s",
        warmup.measured_tokens,
        warmup.duration_s,
        warmup.num_tokens,
        warmup.activation_bytes / 1e6,
        "" if warmup.measured_tokens == warmup.num_tokens else " (estimated, see warmup.py)",
    )
    capacity = sched_config.max_batch_total_tokens or kv_capacity_tokens(
        shard.spec.bytes_per_token + extra_bytes_per_token,
        shard.device,
        warmup,
        memory_share=1 / shard.num_local,
    )
    num_blocks = capacity // BLOCK_SIZE
    if shard.groups is not None:
        mine, num_blocks = num_blocks, min_over_shards(num_blocks)
        logger.info("KV cache: this shard holds %d blocks, the tightest %d", mine, num_blocks)
    return num_blocks


def _take_core_share(local_index: int, num_local: int) -> None:
    """Pin this shard to its share of the cores this process may use, one thread a core, so
    that the host's shards do not take turns on the same cores."""
    cores = sorted(os.sched_getaffinity(0))
    if num_local >= len(cores):
        share = [cores[local_index % len(cores)]]
    else:
        share = cores[
            local_index * len(cores) // num_local : (local_index + 1) * len(cores) // num_local
        ]
    os.sched_setaffinity(0, share)
    torch.set_num_threads(len(share))
