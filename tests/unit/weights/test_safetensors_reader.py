"""iter_checkpoint_tensors over single-file and sharded checkpoints, and over broken files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sluice.errors import ModelLoadError
from sluice.weights import safetensors_reader
from sluice.weights.safetensors_reader import iter_checkpoint_tensors


def test_iter_checkpoint_tensors_single_file(tiny_model_dir: Path) -> None:
    tensors = dict(iter_checkpoint_tensors(tiny_model_dir))
    assert "model.embed_tokens.weight" in tensors
    assert tensors["model.layers.1.mlp.down_proj.weight"].shape == (64, 128)


def test_iter_checkpoint_tensors_reads_only_the_included_names(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Names left out are never read: a converted GGUF skips its dense copies of packed linears."""
    read: list[str] = []
    real_safe_open = safetensors_reader.safe_open

    class RecordingReader:
        def __init__(self, *args: object, **kwargs: object) -> None:
            self._reader = real_safe_open(*args, **kwargs)

        def __enter__(self) -> RecordingReader:
            self._reader.__enter__()
            return self

        def __exit__(self, *exc: object) -> None:
            self._reader.__exit__(*exc)

        def keys(self) -> list[str]:
            return list(self._reader.keys())

        def get_tensor(self, name: str) -> torch.Tensor:
            read.append(name)
            return self._reader.get_tensor(name)

    monkeypatch.setattr(safetensors_reader, "safe_open", RecordingReader)
    tensors = dict(iter_checkpoint_tensors(tiny_model_dir, include=lambda name: "mlp" not in name))
    assert tensors and all("mlp" not in name for name in tensors)
    assert sorted(read) == sorted(tensors)


def test_iter_checkpoint_tensors_sharded_index_ignores_extra_files(tmp_path: Path) -> None:
    first = {"a": torch.zeros(2, 3)}
    second = {"b": torch.ones(4)}
    save_file(first, tmp_path / "model-00001-of-00002.safetensors")
    save_file(second, tmp_path / "model-00002-of-00002.safetensors")
    save_file({"a": torch.full((2, 3), 7.0)}, tmp_path / "consolidated.safetensors")
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    tensors = dict(iter_checkpoint_tensors(tmp_path))
    assert tensors.keys() == {"a", "b"}
    torch.testing.assert_close(tensors["a"], first["a"])


def test_iter_checkpoint_tensors_empty_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no \\*.safetensors"):
        list(iter_checkpoint_tensors(tmp_path))


def test_iter_checkpoint_tensors_corrupt_file(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        list(iter_checkpoint_tensors(tmp_path))


def test_iter_checkpoint_tensors_bad_index(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors.index.json").write_text('{"weight_map": 3}')
    with pytest.raises(ModelLoadError, match="cannot read"):
        list(iter_checkpoint_tensors(tmp_path))
