"""Starts `sluice serve`: resolves the model, spawns the engine process (and, when the model is
sharded, this host's other shards), runs the HTTP server in this process, and watches them.
If any dies, the server stops with exit code 1. On a host other than host 0 it runs that
host's shards only, and exits when they do."""

import asyncio
import logging
import multiprocessing
import os

import uvicorn
from transformers import PreTrainedTokenizerBase

from sluice.api.app import create_app
from sluice.api.metrics import ServerMetrics
from sluice.api.state import ServingState
from sluice.api.tracing import start_tracing
from sluice.config import SluiceConfig
from sluice.distributed.topology import Topology, resolve_topology
from sluice.engine.process import EngineLaunch, run_engine_process
from sluice.engine.support import check_engine_support
from sluice.errors import ConfigError
from sluice.frontend.engine_client import EngineClient
from sluice.frontend.tokenizer import eos_token_ids, load_tokenizer
from sluice.ipc.transport import FrontendChannel, IpcAddresses
from sluice.shard_processes import ProcessWatch, run_shards_only
from sluice.weights.sources import ResolvedModel, resolve_model

logger = logging.getLogger(__name__)

WATCH_INTERVAL_S = 0.2


def serve(config: SluiceConfig) -> int:
    """Serve until interrupted (exit code 0) or until the engine or a shard dies (exit code
    1)."""
    topology = resolve_topology(config.sharding, os.environ)
    resolved = resolve_model(config.model.model_id, config.model.revision, show_progress=True)
    if config.model.trust_remote_code:
        logger.warning("--trust-remote-code is on: the checkpoint's own Python code may run")
    check_engine_support(config.model, resolved, topology)
    if not topology.serves_api:
        return run_shards_only(config, resolved.path, topology)
    speculator = _resolve_speculator(config, topology)
    speculator_path = None if speculator is None else speculator.path
    addresses = IpcAddresses.in_new_temp_dir()
    channel = FrontendChannel(addresses)
    spawn = multiprocessing.get_context("spawn")
    # Started before the tokenizer loads: the engine's imports and model load, the longest part
    # of a start, then run beside the rest of this process's set-up.
    engine = spawn.Process(
        target=run_engine_process,
        args=(
            EngineLaunch(
                config,
                resolved.path,
                addresses,
                speculator_path,
                placement=topology.placement(0) if topology.world_size > 1 else None,
            ),
        ),
        name="sluice-engine",
        daemon=True,
    )
    engine.start()
    processes = ProcessWatch({"engine process": engine})
    processes.start_shards(config, resolved.path, topology, first_index=1)
    tracer_provider = None
    try:
        tokenizer = load_tokenizer(resolved.path, trust_remote_code=config.model.trust_remote_code)
        if speculator is not None:
            _check_speculator_vocabulary(config, speculator, tokenizer)
        metrics = ServerMetrics()
        state = ServingState(
            config=config,
            model_id=resolved.model_id,
            model_sha=resolved.sha,
            tokenizer=tokenizer,
            eos_token_ids=eos_token_ids(resolved.path, tokenizer),
            client=EngineClient(
                channel, engine_failure=processes.failure, on_step=metrics.observe_step
            ),
            metrics=metrics,
        )
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(state),
                host=config.server.hostname,
                port=config.server.port,
                log_level="warning",
                log_config=None,  # uvicorn's records go through our handlers (text or JSON)
                timeout_graceful_shutdown=5,
            )
        )
        logger.info("listening on %s:%d", config.server.hostname, config.server.port)
        if config.server.otlp_endpoint is not None:
            tracer_provider = start_tracing(
                config.server.otlp_endpoint, config.server.otlp_service_name
            )
        return asyncio.run(_serve_while_engine_lives(server, state.client))
    finally:
        if tracer_provider is not None:
            tracer_provider.shutdown()
        processes.stop()
        channel.close()


def _resolve_speculator(config: SluiceConfig, topology: Topology) -> ResolvedModel | None:
    """The draft model (`--speculator-model-id`), checked to be one the engine can run."""
    model_id = config.scheduler.speculator_model_id
    if model_id is None:
        return None
    resolved = resolve_model(model_id, None, show_progress=True)
    check_engine_support(config.model, resolved, topology)
    return resolved


def _check_speculator_vocabulary(
    config: SluiceConfig, speculator: ResolvedModel, tokenizer: PreTrainedTokenizerBase
) -> None:
    """A draft model's drafts are token ids, which must mean the same text to both models."""
    draft_tokenizer = load_tokenizer(
        speculator.path, trust_remote_code=config.model.trust_remote_code
    )
    if draft_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ConfigError(
            f"--speculator-model-id {speculator.model_id} has another tokenizer than the served "
            "model; a speculator must share the model's vocabulary"
        )


async def _serve_while_engine_lives(server: uvicorn.Server, client: EngineClient) -> int:
    server_task = asyncio.create_task(server.serve())
    exit_code = 0
    while not server_task.done():
        await asyncio.sleep(WATCH_INTERVAL_S)
        client.check_engine()
        if client.failure is not None and not server.should_exit:
            logger.error("shutting down: %s", client.failure)
            exit_code = 1
            server.should_exit = True
    await server_task
    return exit_code
