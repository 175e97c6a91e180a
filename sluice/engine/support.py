"""Refuses, before anything heavy is loaded, a model or launcher setting the engine cannot
serve: an unknown architecture, code the user did not trust, a quantization that does not
match the checkpoint, more shards than devices. Each refusal is one line naming what to pass."""

import torch

from sluice.config import ModelConfig
from sluice.errors import ConfigError, ModelLoadError
from sluice.model.loader import read_hf_config
from sluice.model.models.registry import model_class_for
from sluice.quantization.scheme import resolve_scheme
from sluice.weights.sources import ResolvedModel


def check_engine_support(config: ModelConfig, resolved: ResolvedModel) -> None:
    check_num_shard(config.num_shard)
    try:
        hf_config = read_hf_config(resolved.path, trust_remote_code=config.trust_remote_code)
        model_class_for(hf_config.architectures)
    except ValueError as error:
        message = str(error).strip().splitlines()[0]
        if "trust_remote_code" in str(error):
            message = "it ships its own code; pass `--trust-remote-code` to allow running it"
        raise ModelLoadError(f"model {resolved.model_id}: {message}") from None
    resolve_scheme(config.quantize, resolved.path)


def check_num_shard(num_shard: int | None) -> None:
    if num_shard is None or num_shard == 1:
        return
    devices = torch.cuda.device_count() if torch.cuda.is_available() else 1
    kind = "CUDA devices" if torch.cuda.is_available() else "device (no CUDA devices)"
    if num_shard > devices:
        raise ConfigError(f"`--num-shard` is {num_shard} but only found {devices} {kind}")
    raise ConfigError("tensor parallelism (`--num-shard` > 1) is not supported by this server yet")
