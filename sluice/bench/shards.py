"""Runs a function on several gloo shards of this host, each in its own spawned process pinned
to its share of the cores as the server's shards are, and returns what each call returned:
for tests and benchmarks of sharded models without a server."""

import multiprocessing
import pickle
import socket
import traceback
from collections.abc import Callable
from typing import Any

from sluice.distributed.shard_group import MasterAddress, leave_shard_group
from sluice.distributed.topology import ShardPlacement
from sluice.engine.shard_setup import join_shards

ShardFunction = Callable[..., Any]
"""Called as function(parallel, *args) on every shard; what it returns must pickle."""


def run_on_shards(num_shards: int, function: ShardFunction, *args: Any) -> list[Any]:
    """Each shard's result, by rank. Raises if any shard raised, with its traceback."""
    context = multiprocessing.get_context("spawn")
    results = context.SimpleQueue()
    master = MasterAddress("127.0.0.1", free_port())
    processes = [
        context.Process(
            target=_shard_main, args=(rank, num_shards, master, function, args, results)
        )
        for rank in range(num_shards)
    ]
    for process in processes:
        process.start()
    try:
        by_rank: dict[int, Any] = {}
        failures = []
        for _ in processes:
            rank, ok, value = results.get()
            if ok:
                by_rank[rank] = pickle.loads(value)
            else:
                failures.append(f"shard {rank}:\n{value}")
        if failures:
            raise AssertionError("\n".join(failures))
        return [by_rank[rank] for rank in range(num_shards)]
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _shard_main(
    rank: int,
    num_shards: int,
    master: MasterAddress,
    function: ShardFunction,
    args: tuple[Any, ...],
    results: Any,
) -> None:
    try:
        _, groups = join_shards(ShardPlacement(rank, num_shards, rank, num_shards, master))
        assert groups is not None
        parallel = groups.parallel
        # Pickled here, by value: a queue would share a tensor's memory through a socket of
        # this process, which may be gone by the time the caller reads it.
        results.put((rank, True, pickle.dumps(function(parallel, *args))))
    except BaseException:
        results.put((rank, False, traceback.format_exc()))
    finally:
        leave_shard_group()
