"""resolve_model on Hub repo ids, offline, against a hand-built Hugging Face cache."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sluice.errors import ModelLoadError
from sluice.weights.hub import hub_cache_dir
from sluice.weights.sources import resolve_model

HUB_REPO_ID = "tiny-org/tiny-llama"
HUB_SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def offline_hub(hub_cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HF_HUB_OFFLINE=1 and HF_HUB_CACHE pointing at the (maybe empty) hand-built cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache_dir))
    return hub_cache_dir


def test_resolve_model_hub_id_from_cache(
    offline_hub: Path, make_hub_cache: Callable[..., Path], tmp_path: Path
) -> None:
    snapshot = make_hub_cache(HUB_REPO_ID, HUB_SHA)
    resolved = resolve_model(HUB_REPO_ID, cache_dir=tmp_path / "sluice")
    assert resolved.model_id == HUB_REPO_ID
    assert resolved.path == snapshot
    assert resolved.sha == HUB_SHA


def test_resolve_model_hub_revision_as_sha(
    offline_hub: Path, make_hub_cache: Callable[..., Path], tmp_path: Path
) -> None:
    older_sha = "f" * 40
    make_hub_cache(HUB_REPO_ID, HUB_SHA)
    older = make_hub_cache(HUB_REPO_ID, older_sha, is_main=False)
    resolved = resolve_model(HUB_REPO_ID, revision=older_sha, cache_dir=tmp_path)
    assert resolved.path == older
    assert resolved.sha == older_sha


def test_resolve_model_hub_missing_repo_offline(offline_hub: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as excinfo:
        resolve_model("nobody/absent-model", cache_dir=tmp_path)
    message = str(excinfo.value)
    assert "\n" not in message
    for word in ("nobody/absent-model", "sluice download", "HF_HUB_OFFLINE"):
        assert word in message, message


def test_resolve_model_hub_snapshot_without_weights(
    offline_hub: Path, make_hub_cache: Callable[..., Path], tmp_path: Path
) -> None:
    (make_hub_cache(HUB_REPO_ID, HUB_SHA) / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError) as excinfo:
        resolve_model(HUB_REPO_ID, cache_dir=tmp_path)
    assert HUB_REPO_ID in str(excinfo.value)
    assert "safetensors" in str(excinfo.value)


def test_resolve_model_invalid_repo_id(offline_hub: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as excinfo:
        resolve_model("bad id with spaces", cache_dir=tmp_path)
    assert "'bad id with spaces' is neither an existing local path" in str(excinfo.value)


def test_hub_cache_dir_follows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    assert hub_cache_dir() == tmp_path / "hf-home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "explicit"))
    assert hub_cache_dir() == tmp_path / "explicit"
