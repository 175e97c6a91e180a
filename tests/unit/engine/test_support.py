"""Sharding refusals at start, before any weight is read: one line naming the numbers."""

import json
from pathlib import Path

import pytest
from transformers import LlamaConfig

from sluice.config import ModelConfig, ShardingConfig
from sluice.distributed.topology import resolve_topology
from sluice.engine.support import check_engine_support
from sluice.errors import ConfigError
from sluice.weights.sources import ResolvedModel

SMOLLM_SHAPE = dict(
    hidden_size=576, num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536
)


def _model(tmp_path: Path, quantization_config: dict | None = None) -> ResolvedModel:
    config = LlamaConfig(**SMOLLM_SHAPE, architectures=["LlamaForCausalLM"]).to_dict()
    if quantization_config is not None:
        config["quantization_config"] = quantization_config
    (tmp_path / "config.json").write_text(json.dumps(config))
    return ResolvedModel("test/model", tmp_path, None)


def _check(model: ResolvedModel, num_shard: int, quantize: str | None = None) -> None:
    topology = resolve_topology(ShardingConfig(num_shard=num_shard), {})
    check_engine_support(ModelConfig(quantize=quantize), model, topology)


def test_nine_heads_split_over_two_or_three_shards(tmp_path: Path) -> None:
    model = _model(tmp_path)
    _check(model, 2)
    _check(model, 3)
    _check(model, 2, quantize="bitsandbytes-nf4")  # blocks of 64: one per head


def test_more_shards_than_heads_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be split into 10 shards: 10 shards for 9"):
        _check(_model(tmp_path), 10)


def test_groups_that_heads_would_cut_are_refused(tmp_path: Path) -> None:
    g64, g128 = ({"quant_method": "gptq", "bits": 4, "group_size": g} for g in (64, 128))
    _check(_model(tmp_path, g64), 2)  # heads of 64 features hold whole groups
    with pytest.raises(
        ConfigError, match=r"\(320 features from 0\) cut the quantization groups of 128"
    ):
        _check(_model(tmp_path, g128), 2)


def test_act_order_weights_are_refused(tmp_path: Path) -> None:
    gptq = {"quant_method": "gptq", "bits": 4, "group_size": 64, "desc_act": True}
    with pytest.raises(ConfigError, match="act-order"):
        _check(_model(tmp_path, gptq), 3)
