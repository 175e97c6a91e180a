"""resolve_model on local directories and on ids that are neither a model nor a Hub repo."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice.errors import ModelLoadError
from sluice.weights.sources import ResolvedModel, default_cache_dir, resolve_model


def _assert_one_line_error(excinfo: pytest.ExceptionInfo[ModelLoadError], *words: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_resolve_model_local_dir_returned_as_is(tiny_model_dir: Path, tmp_path: Path) -> None:
    resolved = resolve_model(str(tiny_model_dir), cache_dir=tmp_path / "cache")
    # /info names a local model by its directory's name: the API reveals no paths.
    assert resolved == ResolvedModel(model_id="tiny-llama", path=tiny_model_dir, sha=None)
    assert not (tmp_path / "cache").exists()


def test_resolve_model_relative_dir(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tiny_model_dir.parent)
    resolved = resolve_model(tiny_model_dir.name, cache_dir=tmp_path / "cache")
    assert resolved.model_id == tiny_model_dir.name
    assert resolved.path == tiny_model_dir.resolve()


def test_resolve_model_sharded_index(tiny_model_dir: Path, tmp_path: Path) -> None:
    (tiny_model_dir / "model.safetensors").rename(
        tiny_model_dir / "model-00001-of-00001.safetensors"
    )
    index = '{"metadata": {}, "weight_map": {"lm_head.weight": "model-00001-of-00001.safetensors"}}'
    (tiny_model_dir / "model.safetensors.index.json").write_text(index)
    assert resolve_model(str(tiny_model_dir), cache_dir=tmp_path).path == tiny_model_dir


def test_resolve_model_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ModelLoadError) as excinfo:
        resolve_model(str(missing), cache_dir=tmp_path)
    _assert_one_line_error(excinfo, str(missing), "no such file or directory")


def test_resolve_model_dir_without_config(tiny_model_dir: Path, tmp_path: Path) -> None:
    (tiny_model_dir / "config.json").unlink()
    with pytest.raises(ModelLoadError) as excinfo:
        resolve_model(str(tiny_model_dir), cache_dir=tmp_path)
    _assert_one_line_error(excinfo, "no config.json", str(tiny_model_dir))


def test_resolve_model_dir_without_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    (tiny_model_dir / "model.safetensors").rename(tiny_model_dir / "pytorch_model.bin")
    with pytest.raises(ModelLoadError) as excinfo:
        resolve_model(str(tiny_model_dir), cache_dir=tmp_path)
    _assert_one_line_error(excinfo, "no *.safetensors", ".bin")


def test_resolve_model_index_names_missing_shard(tiny_model_dir: Path, tmp_path: Path) -> None:
    index = '{"weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}'
    (tiny_model_dir / "model.safetensors.index.json").write_text(index)
    with pytest.raises(ModelLoadError) as excinfo:
        resolve_model(str(tiny_model_dir), cache_dir=tmp_path)
    _assert_one_line_error(excinfo, "model-00002-of-00002.safetensors", "incomplete")


def test_resolve_model_dir_without_tokenizer(tiny_model_dir: Path, tmp_path: Path) -> None:
    (tiny_model_dir / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError) as excinfo:
        resolve_model(str(tiny_model_dir), cache_dir=tmp_path)
    _assert_one_line_error(excinfo, "no tokenizer", "tokenizer.json")


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"hidden_size": 64}', "\xff\xfe"])
def test_resolve_model_garbage_config(tiny_model_dir: Path, tmp_path: Path, content: str) -> None:
    (tiny_model_dir / "config.json").write_text(content, encoding="latin-1")
    with pytest.raises(ModelLoadError) as excinfo:
        resolve_model(str(tiny_model_dir), cache_dir=tmp_path)
    _assert_one_line_error(excinfo, "config.json")


def test_resolve_model_file_that_is_not_gguf(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as excinfo:
        resolve_model(str(tiny_model_dir / "config.json"), cache_dir=tmp_path)
    _assert_one_line_error(excinfo, "not a .gguf")


def test_resolve_model_missing_gguf_is_not_sent_to_hub(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as excinfo:
        resolve_model("model.Q4_0.gguf", cache_dir=tmp_path)
    _assert_one_line_error(excinfo, "no such file or directory")


def test_default_cache_dir_reads_env_at_call_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "sluice"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "sluice"
