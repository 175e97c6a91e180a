"""Reads every tensor of a checkpoint directory's safetensors files, one at a time, so a loader
never holds more than one tensor beyond the model it fills. The tensors are views of the
file's memory map: a tensor-parallel shard that copies its slice out of one reads only that
slice's pages, never the whole tensor. Knows nothing about model classes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

from safetensors import SafetensorError, safe_open

from sluice.errors import ModelLoadError

if TYPE_CHECKING:
    import torch

INDEX_NAME: Final = "model.safetensors.index.json"


def checkpoint_files(path: Path) -> list[Path]:
    """The safetensors files that make up the checkpoint in directory path.

    With a sharded index, exactly the shards it names (extra files such as Mistral's
    consolidated.safetensors would duplicate tensors); otherwise every top-level *.safetensors.
    """
    index = path / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ModelLoadError(f"cannot read {index}: {type(e).__name__}: {e}") from e
        files = [path / name for name in names]
        absent = [file.name for file in files if not file.is_file()]
        if absent:
            raise ModelLoadError(
                f"{index} names {len(absent)} missing shard(s) (first: {absent[0]}); "
                "the download is incomplete, fetch the model again"
            )
        return files
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"no *.safetensors weights in {path}; sluice reads only safetensors")
    return files


def iter_checkpoint_tensors(
    path: Path, include: Callable[[str], bool] | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) for every tensor of every checkpoint safetensors file in `path`, or
    for those whose name `include` accepts (the others are never read)."""
    for file in checkpoint_files(path):
        try:
            with safe_open(file, framework="pt") as reader:
                for name in reader.keys():  # noqa: SIM118 - safe_open is not a mapping
                    if include is None or include(name):
                        yield name, reader.get_tensor(name)
        except (SafetensorError, OSError) as e:
            raise ModelLoadError(
                f"cannot read weights file {file}: {e}; the file is corrupt or truncated"
            ) from e
