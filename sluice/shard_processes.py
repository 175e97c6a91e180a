"""The processes one `sluice serve` starts and watches: the engine (rank 0) and this host's
other shards, or, on a host other than host 0, that host's shards alone."""

import logging
import multiprocessing
import signal
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from sluice.config import SluiceConfig
from sluice.distributed.topology import Topology
from sluice.engine.shard_worker import ShardLaunch, run_shard_process

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.2
STOP_TIMEOUT_S = 10


class ProcessWatch:
    def __init__(self, processes: dict[str, BaseProcess]) -> None:
        """`processes`: started ones, by the name a failure reports them by."""
        self.processes = dict(processes)

    def start_shards(
        self, config: SluiceConfig, model_path: Path, topology: Topology, *, first_index: int
    ) -> None:
        """Start the shards this process runs, from its `first_index`th on."""
        spawn = multiprocessing.get_context("spawn")
        for index in range(first_index, topology.num_local):
            placement = topology.placement(index)
            process = spawn.Process(
                target=run_shard_process,
                args=(ShardLaunch(config, model_path, placement),),
                name=f"sluice-shard-{placement.rank}",
                daemon=True,
            )
            process.start()
            self.processes[f"shard {placement.rank}"] = process

    def failure(self) -> str | None:
        """Which process has exited, if any has."""
        exited = self._exited()
        return None if exited is None else f"{exited[0]} exited with code {exited[1]}"

    def wait(self) -> int:
        """Until one exits: 0 if it exited cleanly (rank 0 stopped the shards), else 1."""
        while (exited := self._exited()) is None:
            time.sleep(POLL_INTERVAL_S)
        name, code = exited
        if code == 0:
            logger.info("%s stopped", name)
            return 0
        logger.error("%s exited with code %s; stopping", name, code)
        return 1

    def _exited(self) -> tuple[str, int | None] | None:
        """The first process that has exited, by name, with its exit code."""
        for name, process in self.processes.items():
            if not process.is_alive():
                return name, process.exitcode
        return None

    def stop(self) -> None:
        """Stop them in the order they started: the engine first, which tells every shard,
        on every host, to stop."""
        for process in self.processes.values():
            if process.is_alive():
                process.terminate()
                process.join(timeout=STOP_TIMEOUT_S)
            if process.is_alive():
                process.kill()
                process.join()


def run_shards_only(config: SluiceConfig, model_path: Path, topology: Topology) -> int:
    """A host other than host 0: run its shards until they stop (exit 0, when rank 0 stops
    them) or one fails, e.g. because host 0 went away (exit 1)."""
    ranks = range(topology.first_rank, topology.first_rank + topology.num_local)
    logger.info(
        "running shards %s of %d; the host of shard 0 (%s) serves the API",
        ", ".join(map(str, ranks)),
        topology.world_size,
        topology.master.host,
    )
    watch = ProcessWatch({})
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        watch.start_shards(config, model_path, topology, first_index=0)
        return watch.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        watch.stop()


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
