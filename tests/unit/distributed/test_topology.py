import pytest

from sluice.config import ShardingConfig
from sluice.distributed.shard_group import MasterAddress
from sluice.distributed.topology import resolve_topology
from sluice.errors import ConfigError


def test_one_host_runs_every_shard_and_serves_the_api() -> None:
    topology = resolve_topology(ShardingConfig(num_shard=3), {})
    assert (topology.world_size, topology.first_rank, topology.num_local) == (3, 0, 3)
    assert topology.serves_api
    assert [topology.placement(i).rank for i in range(3)] == [0, 1, 2]
    assert topology.placement(2).local_index == 2


def test_the_second_of_two_hosts_runs_the_upper_half_and_no_api() -> None:
    sharding = ShardingConfig(
        num_shard=4, nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29511
    )
    topology = resolve_topology(sharding, {})
    assert not topology.serves_api
    placements = [topology.placement(i) for i in range(topology.num_local)]
    assert [(p.rank, p.local_index, p.num_local) for p in placements] == [(2, 0, 2), (3, 1, 2)]
    assert placements[0].master == MasterAddress("10.0.0.1", 29511)


def test_torchrun_makes_this_process_one_shard() -> None:
    env = {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "10.0.0.7",
        "MASTER_PORT": "1234",
    }
    topology = resolve_topology(ShardingConfig(), env)
    placement = topology.placement(0)
    assert topology.num_local == 1 and not topology.serves_api
    assert (placement.rank, placement.world_size) == (3, 4)
    assert (placement.local_index, placement.num_local) == (1, 2)
    assert placement.master == MasterAddress("10.0.0.7", 1234, from_torchrun=True)


def test_torchrun_and_a_different_num_shard_are_refused() -> None:
    with pytest.raises(ConfigError, match="`--num-shard` is 2 but torchrun's WORLD_SIZE is 4"):
        resolve_topology(ShardingConfig(num_shard=2), {"RANK": "0", "WORLD_SIZE": "4"})


def test_sharded_without_a_count_needs_gpus() -> None:
    with pytest.raises(ConfigError, match="`sharded` is true but only found 0 CUDA devices"):
        resolve_topology(ShardingConfig(sharded=True), {})
