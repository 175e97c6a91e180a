"""Entry point of the engine process: load the model, size the KV cache, report readiness,
then run the busy loop. Any start-up failure is reported to the API process as one line."""

import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import torch
from torch import nn
from transformers import PretrainedConfig

from sluice.config import SchedulerConfig, SluiceConfig, derive_limits
from sluice.cpu import bfloat16_support
from sluice.distributed.parallel_context import SINGLE_DEVICE, ShardLost
from sluice.distributed.shard_group import leave_shard_group, wait_for_all_shards
from sluice.distributed.topology import ShardPlacement
from sluice.engine.core import EngineCore
from sluice.engine.drafts import Drafter
from sluice.engine.executor import Executor, LocalExecutor, ShardedExecutor
from sluice.engine.grammar import GrammarMatchers, load_grammar_matchers
from sluice.engine.kv_cache.manager import KVCacheManager
from sluice.engine.plan_broadcast import PlanBroadcast
from sluice.engine.scheduler import Scheduler, SchedulerLimits
from sluice.engine.shard_setup import BLOCK_SIZE, join_shards, load_shard, size_kv_cache
from sluice.errors import ConfigError, SluiceError
from sluice.ipc.messages import EngineFailed, EngineReady
from sluice.ipc.transport import EngineChannel, IpcAddresses
from sluice.log import configure_logging
from sluice.model.attention.backend import AttentionBackend
from sluice.model.batch_invariance import model_is_batch_invariant
from sluice.model.kernels import cpu_kernels
from sluice.model.kv_cache import KVCacheSpec
from sluice.model.loader import load_model, read_hf_config
from sluice.model.runner import ModelRunner
from sluice.quantization.scheme import packed_kernel_dtype, resolve_scheme
from sluice.speculative.draft_model import DraftModel

logger = logging.getLogger(__name__)

PROMPT_TOKENS_WHILE_DECODING = {"cpu": 128, "cuda": 1024}
"""Per device: a CPU step's time grows with every token; a GPU step's barely does until a
few hundred tokens, so it can take bigger chunks for the same inter-token latency."""
SPECULATION_STEP_TOKENS = {"cpu": 16, "cuda": 256}
"""Per device, the step size up to which reading the weights, not computing, sets a decode
step's time (on a CPU, reading a small model's weights takes about as long as a dozen tokens'
matmuls), so that drafts verified beside the decodes cost little: see engine/drafts.py."""


@dataclass(frozen=True, slots=True)
class EngineLaunch:
    """Everything the engine process needs, sent to it at spawn."""

    config: SluiceConfig
    model_path: Path
    addresses: IpcAddresses
    speculator_path: Path | None = None
    """The draft model's directory (`--speculator-model-id`), checked to share the
    tokenizer."""
    placement: ShardPlacement | None = None
    """Rank 0's place among the shards; None when the model is not sharded."""


def run_engine_process(launch: EngineLaunch) -> None:
    configure_logging("engine", json_output=launch.config.server.json_output)
    # A Ctrl-C reaches the terminal's whole process group; the launcher stops the engine
    # itself, once the server has drained (api/shutdown.py).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = EngineChannel(launch.addresses)
    try:
        core, ready = _start_engine(launch, channel)
    except SluiceError as error:  # a message for the user, which the API process logs
        _report_failure(channel, str(error))
    except (ValueError, OSError, RuntimeError) as error:  # unforeseen: keep the traceback
        logger.exception("engine failed to start")
        _report_failure(channel, str(error))
    channel.send(ready)
    signal.signal(signal.SIGTERM, lambda *_: core.request_stop())
    try:
        core.run_forever()
    except ShardLost as error:
        logger.error("lost a shard, exiting: %s", error)
        sys.exit(1)
    finally:
        channel.close()
        leave_shard_group()


def _report_failure(channel: EngineChannel, message: str) -> NoReturn:
    channel.send(EngineFailed(message=message))
    channel.close()
    sys.exit(1)


def _start_engine(launch: EngineLaunch, channel: EngineChannel) -> tuple[EngineCore, EngineReady]:
    device, groups = join_shards(launch.placement)
    num_local = launch.placement.num_local if launch.placement is not None else 1
    shard = load_shard(launch.config, launch.model_path, device, groups, num_local)
    hf_config, dtype = shard.hf_config, shard.dtype
    if device.type == "cpu" and dtype in (torch.bfloat16, torch.float32):
        _log_batch_invariance(shard.model, shard.backend, dtype)
    draft = _load_draft(launch, hf_config, dtype, device, shard.backend)
    sched_config = launch.config.scheduler
    _warn_of_ignored_flags(sched_config)
    draft_bytes_per_token = draft[1].bytes_per_token if draft else 0
    num_blocks = size_kv_cache(shard, launch.config, extra_bytes_per_token=draft_bytes_per_token)
    limits = derive_limits(
        sched_config,
        kv_capacity_tokens=num_blocks * BLOCK_SIZE,
        max_position_embeddings=hf_config.max_position_embeddings,
        block_size=BLOCK_SIZE,
    )
    kv_caches = shard.spec.allocate(num_blocks, BLOCK_SIZE, device)
    prefix_caching = prefix_caching_enabled(os.environ.get("PREFIX_CACHING"))
    logger.info(
        "KV cache: %d blocks of %d tokens (%.0f MB), prefix caching %s; "
        "max_input_tokens=%d max_total_tokens=%d",
        num_blocks,
        BLOCK_SIZE,
        num_blocks * BLOCK_SIZE * (shard.spec.bytes_per_token + draft_bytes_per_token) / 1e6,
        "on" if prefix_caching else "off",
        limits.max_input_tokens,
        limits.max_total_tokens,
    )
    draft_model = None
    if draft is not None:
        draft_net, draft_spec = draft
        draft_caches = draft_spec.allocate(num_blocks, BLOCK_SIZE, device)
        draft_model = DraftModel(draft_net, shard.backend, draft_caches, BLOCK_SIZE, device)
    runner = ModelRunner(shard.model, shard.backend, kv_caches, BLOCK_SIZE, device, draft_model)
    scheduler = Scheduler(
        SchedulerLimits(
            max_step_tokens=limits.max_batch_prefill_tokens,
            max_prompt_tokens_while_decoding=sched_config.max_prompt_tokens_while_decoding
            or PROMPT_TOKENS_WHILE_DECODING[device.type],
        ),
        KVCacheManager(num_blocks, BLOCK_SIZE, prefix_caching=prefix_caching),
        Drafter(
            sched_config.speculate,
            SPECULATION_STEP_TOKENS[device.type],
            draft_model=draft_model,
        )
        if sched_config.speculate
        else None,
    )
    grammars = _grammar_matchers(launch, hf_config)
    executor: Executor = LocalExecutor(runner)
    if groups is not None:
        wait_for_all_shards()  # the others wait here for rank 0 to be ready to serve
        executor = ShardedExecutor(runner, PlanBroadcast(groups.plans))
    ready = EngineReady(
        limits=limits,
        dtype=str(dtype).removeprefix("torch."),
        device=device.type,
        num_shard=groups.parallel.tp_size if groups is not None else 1,
    )
    return EngineCore(scheduler, executor, channel, grammars), ready


def _log_batch_invariance(model: nn.Module, backend: AttentionBackend, dtype: torch.dtype) -> None:
    if model_is_batch_invariant(model, backend, dtype):
        logger.info(
            "greedy output does not depend on load: the matmuls and attention give a row the "
            "same bits alone and among others (checked on the model's shapes)"
        )
    else:
        logger.warning(
            "greedy output may depend on load: the matmuls or attention round a row "
            "differently among other rows (C++ kernels: %s; this CPU's bfloat16: %s)",
            "built" if cpu_kernels() is not None else "not built",
            bfloat16_support(),
        )


def _load_draft(
    launch: EngineLaunch,
    hf_config: PretrainedConfig,
    dtype: torch.dtype,
    device: torch.device,
    backend: AttentionBackend,
) -> tuple[nn.Module, KVCacheSpec] | None:
    """The draft model (`--speculator-model-id`) and the shape of its KV cache, which shares
    the target's blocks (see speculative/draft_model.py)."""
    if launch.speculator_path is None:
        return None
    trust_remote_code = launch.config.model.trust_remote_code
    draft_config = read_hf_config(launch.speculator_path, trust_remote_code=trust_remote_code)
    if draft_config.vocab_size != hf_config.vocab_size:
        raise ConfigError(
            f"the speculator's vocabulary has {draft_config.vocab_size} entries, the model's "
            f"{hf_config.vocab_size}: a speculator must share the model's tokenizer"
        )
    model = load_model(
        launch.speculator_path,
        draft_config,
        dtype=dtype,
        device=device,
        parallel=SINGLE_DEVICE,
        backend=backend,
        quantization=resolve_scheme(
            None,
            launch.speculator_path,
            kernel_dtype=packed_kernel_dtype(launch.config.model.dtype, dtype, device),
        ),
    )
    return model, KVCacheSpec.for_model(draft_config, dtype)


def _warn_of_ignored_flags(config: SchedulerConfig) -> None:
    defaults = SchedulerConfig()
    for flag, value, default in (
        ("--waiting-served-ratio", config.waiting_served_ratio, defaults.waiting_served_ratio),
        ("--max-waiting-tokens", config.max_waiting_tokens, defaults.max_waiting_tokens),
    ):
        if value != default:
            logger.warning("%s is ignored: prefill is chunked, as in TGI with chunking", flag)


def prefix_caching_enabled(value: str | None) -> bool:
    """TGI's `PREFIX_CACHING` environment variable: "0" or "false" turns prefix caching off;
    it is on otherwise, as in TGI."""
    return (value or "").strip().lower() not in ("0", "false")


def _grammar_matchers(launch: EngineLaunch, hf_config: PretrainedConfig) -> GrammarMatchers | None:
    if launch.config.api.disable_grammar_support:
        return None
    started = time.perf_counter()
    grammars = load_grammar_matchers(
        launch.model_path,
        hf_config.vocab_size,
        trust_remote_code=launch.config.model.trust_remote_code,
    )
    if grammars is not None:
        grammars.start()
        logger.info("grammar matchers ready in %.1fs", time.perf_counter() - started)
    return grammars
