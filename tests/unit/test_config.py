"""check_config's cross-field rules (messages name the flags) and derive_limits' defaults."""

import pytest

from sluice.config import (
    ModelConfig,
    SchedulerConfig,
    ServerConfig,
    ShardingConfig,
    SluiceConfig,
    check_config,
    derive_limits,
)
from sluice.errors import ConfigError


def test_config_defaults_are_valid() -> None:
    config = SluiceConfig()

    check_config(config)
    assert config.scheduler.max_batch_prefill_tokens == 4096
    assert (config.server.hostname, config.server.port) == ("0.0.0.0", 3000)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"model": ModelConfig(dtype="int8")},
            "`--dtype` must be one of float32, bfloat16, float16",
        ),
        ({"server": ServerConfig(port=0)}, "`--port` must be between 1 and 65535; got 0"),
        ({"server": ServerConfig(port=65536)}, "`--port` must be between 1 and 65535; got 65536"),
        (
            {"scheduler": SchedulerConfig(max_concurrent_requests=0)},
            "`--max-concurrent-requests` must be > 0; got 0",
        ),
        (
            {"scheduler": SchedulerConfig(max_batch_prefill_tokens=-1)},
            "`--max-batch-prefill-tokens` must be > 0; got -1",
        ),
        (
            {"scheduler": SchedulerConfig(max_input_tokens=0)},
            "`--max-input-tokens` must be > 0; got 0",
        ),
        (
            {"scheduler": SchedulerConfig(max_total_tokens=0)},
            "`--max-total-tokens` must be > 0; got 0",
        ),
        (
            {"scheduler": SchedulerConfig(max_batch_total_tokens=0)},
            "`--max-batch-total-tokens` must be > 0; got 0",
        ),
        (
            {"scheduler": SchedulerConfig(max_prompt_tokens_while_decoding=0)},
            "`--max-prompt-tokens-while-decoding` must be > 0; got 0",
        ),
        (
            {"scheduler": SchedulerConfig(waiting_served_ratio=-0.5)},
            "`--waiting-served-ratio` must be >= 0; got -0.5",
        ),
        (
            {"scheduler": SchedulerConfig(max_waiting_tokens=0)},
            "`--max-waiting-tokens` must be > 0; got 0",
        ),
        (
            {"scheduler": SchedulerConfig(max_input_tokens=100, max_total_tokens=100)},
            "`--max-input-tokens` (100) must be < `--max-total-tokens` (100)",
        ),
        (
            {"scheduler": SchedulerConfig(max_input_tokens=5000)},
            "`--max-batch-prefill-tokens` must be >= `--max-input-tokens`. Given: 4096 and 5000",
        ),
        (
            {"scheduler": SchedulerConfig(max_total_tokens=9000, max_batch_total_tokens=8192)},
            "`--max-total-tokens` must be <= `--max-batch-total-tokens`. Given: 9000 and 8192",
        ),
        (
            {"scheduler": SchedulerConfig(max_batch_total_tokens=2048)},
            "`--max-batch-prefill-tokens` must be <= `--max-batch-total-tokens`. "
            "Given: 4096 and 2048",
        ),
        ({"sharding": ShardingConfig(num_shard=0)}, "`--num-shard` must be > 0; got 0"),
        (
            {"sharding": ShardingConfig(num_shard=1, sharded=True)},
            "`sharded` is true but `num_shard` <= 1",
        ),
        (
            {"sharding": ShardingConfig(num_shard=2, sharded=False)},
            "`sharded` is false but `num_shard` is 2",
        ),
        (
            {"sharding": ShardingConfig(num_shard=3, nnodes=2)},
            "`--num-shard` (3) counts the shards of all hosts and must divide by `--nnodes` (2)",
        ),
        (
            {"sharding": ShardingConfig(num_shard=4, nnodes=2, node_rank=2)},
            "`--node-rank` must be between 0 and `--nnodes` - 1 (1); got 2",
        ),
        (
            {"sharding": ShardingConfig(master_port=70000)},
            "`--master-port` must be between 1 and 65535; got 70000",
        ),
    ],
)
def test_config_check_rejects_contradictions(config: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        SluiceConfig(**config)  # type: ignore[arg-type]

    assert str(raised.value).startswith(message)


def test_config_accepts_consistent_explicit_limits() -> None:
    SluiceConfig(
        model=ModelConfig(dtype="float16"),
        scheduler=SchedulerConfig(
            max_input_tokens=1000,
            max_total_tokens=2048,
            max_batch_prefill_tokens=2048,
            max_batch_total_tokens=2048,
        ),
        server=ServerConfig(port=65535),
    )


def test_config_derive_limits_defaults_from_cache_and_model() -> None:
    limits = derive_limits(
        SchedulerConfig(), kv_capacity_tokens=100_000, max_position_embeddings=8192, block_size=16
    )

    assert (limits.max_total_tokens, limits.max_input_tokens) == (8192, 4096)
    assert (limits.max_batch_prefill_tokens, limits.max_batch_total_tokens) == (4096, 100_000)
    assert (limits.block_size, limits.num_kv_blocks) == (16, 6250)


def test_config_derive_limits_small_cache_bounds_max_total() -> None:
    limits = derive_limits(
        SchedulerConfig(), kv_capacity_tokens=2000, max_position_embeddings=8192, block_size=16
    )

    assert (limits.max_total_tokens, limits.max_input_tokens) == (2000, 1999)
    assert limits.num_kv_blocks == 125


def test_config_derive_limits_keeps_user_limits() -> None:
    sched = SchedulerConfig(max_input_tokens=300, max_total_tokens=1000)

    limits = derive_limits(
        sched, kv_capacity_tokens=4000, max_position_embeddings=8192, block_size=16
    )

    assert (limits.max_total_tokens, limits.max_input_tokens) == (1000, 300)


def test_config_derive_limits_rejects_max_total_beyond_the_cache() -> None:
    with pytest.raises(ConfigError, match="Not enough memory to handle `max_total_tokens=3000`"):
        derive_limits(
            SchedulerConfig(max_total_tokens=3000),
            kv_capacity_tokens=2048,
            max_position_embeddings=8192,
            block_size=16,
        )


def test_config_derive_limits_rejects_max_input_not_below_derived_max_total() -> None:
    with pytest.raises(ConfigError) as raised:
        derive_limits(
            SchedulerConfig(max_input_tokens=1024),
            kv_capacity_tokens=1024,
            max_position_embeddings=8192,
            block_size=16,
        )

    assert "`--max-input-tokens` (1024) must be < `--max-total-tokens` (1024)" in str(raised.value)
