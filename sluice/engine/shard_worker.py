"""Entry point of a shard other than rank 0: load this shard's part of the model, then run
every plan rank 0 sends, until rank 0 says stop (exit 0) or is lost (exit 1).

Its host's launcher (the API process on host 0, `sluice serve --node-rank N` elsewhere)
starts it and watches it; it serves no API."""

import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from sluice.config import SluiceConfig
from sluice.distributed.parallel_context import ShardLost
from sluice.distributed.shard_group import leave_shard_group, wait_for_all_shards
from sluice.distributed.topology import ShardPlacement
from sluice.engine.plan_broadcast import PlanBroadcast, PlanDecoder
from sluice.engine.shard_setup import BLOCK_SIZE, join_shards, load_shard, size_kv_cache
from sluice.errors import SluiceError
from sluice.log import configure_logging
from sluice.model.runner import ModelRunner

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ShardLaunch:
    config: SluiceConfig
    model_path: Path
    placement: ShardPlacement


def run_shard_process(launch: ShardLaunch) -> None:
    configure_logging(
        f"shard-{launch.placement.rank}", json_output=launch.config.server.json_output
    )
    # A Ctrl-C reaches the terminal's whole process group; the launcher stops this process
    # itself, once the server has drained (api/shutdown.py).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        worker = _start(launch)
        wait_for_all_shards()  # rank 0 is ready to serve
        worker.run()
    except ShardLost as error:
        logger.error("lost the other shards, exiting: %s", error)
        sys.exit(1)
    except SluiceError as error:
        logger.error("shard failed to start: %s", error)
        sys.exit(1)
    finally:
        leave_shard_group()


class ShardWorker:
    def __init__(self, runner: ModelRunner, broadcast: PlanBroadcast) -> None:
        self.runner = runner
        self.broadcast = broadcast
        self._decoder = PlanDecoder()

    def run(self) -> None:
        """Run rank 0's plans until it stops."""
        while True:
            wire = self.broadcast.receive()
            if wire.stop:
                logger.info("rank 0 stopped; shard exits")
                return
            if wire.heartbeat:
                self.broadcast.barrier()
                continue
            plan = self._decoder.decode(wire)
            try:
                self.runner.follow(plan)
            except ShardLost:
                raise
            except Exception:  # rank 0 retries the step's requests one by one; so do we
                logger.exception("a step failed on this shard")


def _start(launch: ShardLaunch) -> ShardWorker:
    device, groups = join_shards(launch.placement)
    assert groups is not None
    shard = load_shard(
        launch.config, launch.model_path, device, groups, num_local=launch.placement.num_local
    )
    caches = shard.spec.allocate(size_kv_cache(shard, launch.config), BLOCK_SIZE, device)
    runner = ModelRunner(shard.model, shard.backend, caches, BLOCK_SIZE, device)
    return ShardWorker(runner, PlanBroadcast(groups.plans))
