"""Fetches a Hub repo's config, tokenizer and safetensors files into the Hugging Face cache via
huggingface_hub.snapshot_download, and turns its errors into one-line ModelLoadErrors.
huggingface_hub reads its env at import; the few variables that pick the cache and offline mode
are read here at call time and passed explicitly, everything else stays huggingface_hub's."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sluice.errors import ModelLoadError

logger = logging.getLogger(__name__)

ALLOW_PATTERNS: Final = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.json",
    "chat_template.jinja",
    "*.safetensors",
    "*.safetensors.index.json",
)
"""What a model needs; everything else in a repo (.bin, .gguf, onnx, images) stays remote."""

IGNORE_PATTERNS: Final = ("*/*", "consolidated*.safetensors")
"""Subfolders hold other formats, and consolidated.safetensors duplicates the HF shards."""

_COMMIT_SHA: Final = re.compile(r"[0-9a-f]{40}")
_TRUE_VALUES: Final = frozenset({"1", "ON", "YES", "TRUE"})


@dataclass(frozen=True, slots=True)
class HubSnapshot:
    """A snapshot directory in the Hugging Face cache."""

    path: Path
    sha: str | None
    """Commit the snapshot folder is named after."""


def download_snapshot(
    repo_id: str, revision: str | None, *, show_progress: bool = False
) -> HubSnapshot:
    """Return the cached snapshot of repo_id at revision, downloading missing files if online."""
    from huggingface_hub import snapshot_download

    is_offline = _is_offline()
    cache_dir = hub_cache_dir()
    started = time.perf_counter()
    try:
        with _hub_progress_bars(enabled=show_progress):
            folder = snapshot_download(
                repo_id,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=is_offline,
                allow_patterns=list(ALLOW_PATTERNS),
                ignore_patterns=list(IGNORE_PATTERNS),
            )
    except Exception as e:  # noqa: BLE001 - huggingface_hub raises many unrelated types
        raise _as_model_load_error(e, repo_id, revision, is_offline) from e
    path = Path(folder)
    sha = path.name if _COMMIT_SHA.fullmatch(path.name) else None
    seconds = time.perf_counter() - started
    logger.info("hub snapshot %s@%s at %s (%.1fs)", repo_id, sha, path, seconds)
    return HubSnapshot(path=path, sha=sha)


def hub_cache_dir() -> Path:
    """HF_HUB_CACHE (or legacy HUGGINGFACE_HUB_CACHE, or HF_HOME/hub) as set now.

    Falls back to huggingface_hub's own default, computed when it was imported.
    """
    from huggingface_hub import constants

    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(os.path.expandvars(home)).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def _is_offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE as set now, or as huggingface_hub read them."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in _TRUE_VALUES or constants.HF_HUB_OFFLINE


def _as_model_load_error(
    error: Exception, repo_id: str, revision: str | None, is_offline: bool
) -> ModelLoadError:
    """One line saying what failed and what to do, for any snapshot_download error."""
    from huggingface_hub import errors as hub_errors

    at = f"{repo_id}@{revision}" if revision else repo_id
    fetch_hint = f"run `sluice download {repo_id}` on a machine with network access"
    if isinstance(error, hub_errors.HFValidationError):
        return ModelLoadError(
            f"model {repo_id!r} is neither an existing local path nor a valid Hub repo id "
            "(org/name)"
        )
    if isinstance(error, hub_errors.IncompleteSnapshotError):
        return ModelLoadError(f"the cached snapshot of {at} is incomplete; {fetch_hint}")
    if isinstance(error, hub_errors.LocalEntryNotFoundError):
        if is_offline:
            return ModelLoadError(
                f"model {at} is not in the Hugging Face cache ({hub_cache_dir()}) "
                f"and HF_HUB_OFFLINE is set; {fetch_hint}, or unset HF_HUB_OFFLINE"
            )
        return ModelLoadError(
            f"model {at} is not in the Hugging Face cache and the Hub could not be reached; "
            f"check the network (or HF_ENDPOINT), or {fetch_hint}"
        )
    if isinstance(error, hub_errors.GatedRepoError):
        return ModelLoadError(f"model {repo_id} is gated; accept its terms and set HF_TOKEN")
    if isinstance(error, hub_errors.RepositoryNotFoundError):
        return ModelLoadError(
            f"model {repo_id} was not found on the Hub (check the id; private repos need HF_TOKEN)"
        )
    if isinstance(error, hub_errors.RevisionNotFoundError):
        return ModelLoadError(f"revision {revision!r} was not found in model {repo_id}")
    first_line = (str(error).splitlines() or [""])[0][:200]
    return ModelLoadError(
        f"cannot fetch model {at} from the Hub: {type(error).__name__}: {first_line}"
    )


@contextlib.contextmanager
def _hub_progress_bars(*, enabled: bool) -> Iterator[None]:
    """Turn huggingface_hub's download bars off for the call unless progress was asked for."""
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    if enabled or are_progress_bars_disabled():
        yield
        return
    disable_progress_bars()
    try:
        yield
    finally:
        enable_progress_bars()
