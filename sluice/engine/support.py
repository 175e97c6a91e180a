"""Refuses, before anything heavy is loaded, a model or launcher setting the engine cannot
serve: an unknown architecture, code the user did not trust, a quantization that does not
match the checkpoint, more shards than devices, head counts that cannot be sharded. Each
refusal is one line naming what to pass."""

import torch
from transformers import PretrainedConfig

from sluice.config import ModelConfig
from sluice.distributed.sharding import even_split, model_shard_heads
from sluice.distributed.topology import Topology
from sluice.errors import ConfigError, ModelLoadError
from sluice.model.loader import read_hf_config
from sluice.model.models.registry import model_class_for
from sluice.quantization.scheme import QuantizationScheme, resolve_scheme
from sluice.weights.sources import ResolvedModel


def check_engine_support(
    config: ModelConfig, resolved: ResolvedModel, topology: Topology | None = None
) -> None:
    """`topology`: the shards to check the model against (None: one)."""
    try:
        hf_config = read_hf_config(resolved.path, trust_remote_code=config.trust_remote_code)
        model_class_for(hf_config.architectures)
    except ValueError as error:
        message = str(error).strip().splitlines()[0]
        if "trust_remote_code" in str(error):
            message = "it ships its own code; pass `--trust-remote-code` to allow running it"
        raise ModelLoadError(f"model {resolved.model_id}: {message}") from None
    scheme = resolve_scheme(config.quantize, resolved.path)
    if topology is not None and topology.world_size > 1:
        _check_sharding(topology, hf_config, resolved.model_id, scheme)


def _check_sharding(
    topology: Topology,
    hf_config: PretrainedConfig,
    model_id: str,
    scheme: QuantizationScheme | None,
) -> None:
    world_size = topology.world_size
    if torch.cuda.is_available():
        devices = torch.cuda.device_count()
        last_index = topology.placement(topology.num_local - 1).local_index
        if last_index >= devices:
            raise ConfigError(
                f"this host runs {last_index + 1} shards but only found {devices} CUDA devices"
            )
    if scheme is not None and scheme.desc_act:
        raise ConfigError(
            "act-order (desc_act) GPTQ weights cannot be split into shards: their groups are "
            "not contiguous in input order; serve them with `--num-shard 1`"
        )
    unit = 1 if scheme is None else scheme.split_unit
    per_channel = scheme is not None and scheme.is_pre_quantized and scheme.group_size == -1
    try:
        for rank in range(world_size):
            for piece in model_shard_heads(hf_config, world_size, rank).query_pieces():
                if piece.start is None and per_channel:
                    raise ValueError(
                        f"shard {rank} pads its attention heads to equal groups, which "
                        "pre-quantized weights with one scale per output channel cannot hold"
                    )
                if (piece.start or 0) % unit or piece.size % unit:
                    raise ValueError(
                        f"shard {rank}'s attention heads ({piece.size} features from "
                        f"{piece.start}) cut the quantization groups of {unit} features"
                    )
        even_split(hf_config.intermediate_size, world_size, 0, unit)
    except ValueError as error:
        raise ConfigError(
            f"model {model_id} cannot be split into {world_size} shards: {error}"
        ) from None
