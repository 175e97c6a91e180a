"""Starts `sluice serve`: resolves the model, spawns the engine process (and, when the model is
sharded, this host's other shards), runs the HTTP server in this process, and watches them.
If any dies, the server stops with exit code 1. On a host other than host 0 it runs that
host's shards only, and exits when they do."""

import asyncio
import logging
import multiprocessing
import os
import time
from types import FrameType

import uvicorn
from transformers import PreTrainedTokenizerBase

from sluice.api.app import create_app
from sluice.api.connection_limits import limited_protocol
from sluice.api.metrics import ServerMetrics
from sluice.api.shutdown import SHUTTING_DOWN, Shutdown
from sluice.api.state import ServingState
from sluice.api.tracing import start_tracing
from sluice.config import SluiceConfig
from sluice.distributed.topology import Topology, resolve_topology
from sluice.engine.process import EngineLaunch, run_engine_process
from sluice.engine.support import check_engine_support
from sluice.errors import ConfigError, ShuttingDownError
from sluice.frontend.engine_client import EngineClient
from sluice.frontend.tokenizer import eos_token_ids, load_tokenizer
from sluice.ipc.transport import FrontendChannel, IpcAddresses
from sluice.shard_processes import ProcessWatch, run_shards_only
from sluice.weights.sources import ResolvedModel, resolve_model

logger = logging.getLogger(__name__)

WATCH_INTERVAL_S = 0.2
LAST_WORDS_S = 5.0
"""After the graceful-termination timeout has ended the requests still running, how long
their error events get to reach clients before the server stops anyway."""


def serve(config: SluiceConfig) -> int:
    """Serve until stopped by a signal, gracefully (exit code 0; api/shutdown.py), or until
    the engine or a shard dies (exit code 1)."""
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
        shutdown = Shutdown(timeout_s=config.server.graceful_termination_timeout)
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
            shutdown=shutdown,
        )
        server = DrainingServer(
            uvicorn.Config(
                create_app(state),
                host=config.server.hostname,
                port=config.server.port,
                log_level="warning",
                log_config=None,  # uvicorn's records go through our handlers (text or JSON)
                timeout_graceful_shutdown=5,
                http=limited_protocol(config.server),
                h11_max_incomplete_event_size=config.server.max_header_bytes,
            ),
            shutdown,
        )
        logger.info("listening on %s:%d", config.server.hostname, config.server.port)
        if config.server.otlp_endpoint is not None:
            tracer_provider = start_tracing(
                config.server.otlp_endpoint, config.server.otlp_service_name
            )
        return asyncio.run(_serve_while_engine_lives(server, state.client, shutdown))
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


class DrainingServer(uvicorn.Server):
    """uvicorn's server, stopping as api/shutdown.py says: the first SIGTERM or SIGINT starts
    draining (the watch loop below stops the server once it has drained), a second one stops
    it at once. The signal is not raised again after the server stops, so a drained server
    exits 0."""

    def __init__(self, config: uvicorn.Config, stop: Shutdown) -> None:
        super().__init__(config)
        self.stop = stop  # not `shutdown`: uvicorn's method of that name

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.stop.draining:
            logger.warning("a second stop signal: stopping now")
            self.force_exit = self.should_exit = True
            return
        self.stop.begin()
        logger.info(
            "stopping: refusing new requests, waiting up to %.0f s for those in flight",
            self.stop.timeout_s,
        )


async def _serve_while_engine_lives(
    server: uvicorn.Server, client: EngineClient, shutdown: Shutdown
) -> int:
    server_task = asyncio.create_task(server.serve())
    exit_code = 0
    ended_at: float | None = None  # when the timeout ended the requests still running
    while not server_task.done():
        await asyncio.sleep(WATCH_INTERVAL_S)
        client.check_engine()
        if server.should_exit:
            continue
        if client.failure is not None:
            logger.error("shutting down: %s", client.failure)
            exit_code = 1
            server.should_exit = True
        elif shutdown.draining and shutdown.open_requests == 0:
            logger.info("drained: every request finished")
            server.should_exit = True
        elif shutdown.overdue() and ended_at is None:
            logger.warning(
                "graceful-termination timeout: ending %d requests still open",
                shutdown.open_requests,
            )
            client.fail_open_requests(ShuttingDownError(SHUTTING_DOWN))
            ended_at = time.monotonic()
        elif ended_at is not None and time.monotonic() - ended_at > LAST_WORDS_S:
            server.should_exit = True
    await server_task
    return exit_code
