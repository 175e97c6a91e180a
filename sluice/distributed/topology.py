"""Which shards run where: from the launcher flags (TGI's `--num-shard`, `--sharded`,
`--master-addr`, `--master-port`; vLLM's `--nnodes`, `--node-rank`) or from torchrun's
environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), where each process is one shard."""

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from sluice.config import ShardingConfig
from sluice.distributed.shard_group import MasterAddress
from sluice.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ShardPlacement:
    """One shard process: its rank, and its share of this host."""

    rank: int
    world_size: int
    local_index: int
    """Among this host's shards: its GPU on CUDA, its share of the cores on CPU."""
    num_local: int
    master: MasterAddress


@dataclass(frozen=True, slots=True)
class Topology:
    world_size: int
    first_rank: int
    """The global rank of this host's first shard."""
    num_local: int
    """Shards this process starts: ranks first_rank .. first_rank + num_local - 1."""
    master: MasterAddress
    first_local_index: int = 0
    """The first one's index among the shards of this host (torchrun's LOCAL_RANK)."""
    shards_on_host: int | None = None
    """All shards of this host, when others start some of them (torchrun's
    LOCAL_WORLD_SIZE); None: `num_local`."""

    @property
    def serves_api(self) -> bool:
        """Rank 0's host serves HTTP and schedules; the others run shards only."""
        return self.first_rank == 0

    def placement(self, index: int) -> ShardPlacement:
        """The placement of the `index`th shard this process starts."""
        return ShardPlacement(
            rank=self.first_rank + index,
            world_size=self.world_size,
            local_index=self.first_local_index + index,
            num_local=self.shards_on_host or self.num_local,
            master=self.master,
        )


def resolve_topology(sharding: ShardingConfig, environ: Mapping[str, str]) -> Topology:
    """This host's shards. Under torchrun this process is the one shard RANK."""
    if "RANK" in environ and "WORLD_SIZE" in environ:
        return _from_torchrun(sharding, environ)
    num_shard = _num_shard(sharding)
    per_node = num_shard // sharding.nnodes
    return Topology(
        world_size=num_shard,
        first_rank=sharding.node_rank * per_node,
        num_local=per_node,
        master=MasterAddress(sharding.master_addr, sharding.master_port),
    )


def _from_torchrun(sharding: ShardingConfig, environ: Mapping[str, str]) -> Topology:
    try:
        rank, world_size = int(environ["RANK"]), int(environ["WORLD_SIZE"])
        local_rank = int(environ.get("LOCAL_RANK", "0"))
        local_world_size = int(environ.get("LOCAL_WORLD_SIZE", "1"))
        port = int(environ.get("MASTER_PORT", str(sharding.master_port)))
    except ValueError as error:
        raise ConfigError(f"torchrun's environment is not valid: {error}") from None
    if sharding.num_shard is not None and sharding.num_shard != world_size:
        raise ConfigError(
            f"`--num-shard` is {sharding.num_shard} but torchrun's WORLD_SIZE is {world_size}"
        )
    if not 0 <= rank < world_size:
        raise ConfigError(f"torchrun's RANK ({rank}) must be below WORLD_SIZE ({world_size})")
    return Topology(
        world_size=world_size,
        first_rank=rank,
        num_local=1,
        master=MasterAddress(
            environ.get("MASTER_ADDR", sharding.master_addr), port, from_torchrun=True
        ),
        first_local_index=local_rank,
        shards_on_host=local_world_size,
    )


def _num_shard(sharding: ShardingConfig) -> int:
    """TGI's rules: `sharded` true without a count shards over every visible GPU."""
    if sharding.num_shard is not None:
        return sharding.num_shard
    if sharding.sharded:
        devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if devices <= 1:
            raise ConfigError(
                f"`sharded` is true but only found {devices} CUDA devices; on a CPU, "
                "give the number of shards with `--num-shard`"
            )
        return devices * sharding.nnodes
    return 1
