"""Converts a GGUF checkpoint once into a Hugging Face layout directory (fp32 safetensors, config,
generation config, tokenizer files, and the block-quantized linears as stored, see
`gguf_linears`). Owns the completion marker and the cross-process lock; knows nothing about where
the GGUF came from."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from filelock import FileLock, Timeout

from sluice.errors import ModelLoadError
from sluice.weights.gguf_linears import write_gguf_linears

logger = logging.getLogger(__name__)

CONVERTER_VERSION: Final = 2
"""Bump when the written layout changes; directories with an older marker are converted again."""

LOCK_TIMEOUT_S: Final = 3600
"""How long a caller waits for another process converting the same model."""

MARKER_NAME: Final = ".sluice-converted.json"
"""Written last inside the directory; its presence with the current version means complete."""

_TOKENIZER_CONFIG_LOAD_ARTIFACTS: Final = ("is_local", "local_files_only")
"""Keys transformers copies from from_pretrained() kwargs into tokenizer_config.json."""


@dataclass(frozen=True, slots=True)
class _GgufFacts:
    """What the tokenizer step needs from the GGUF metadata read while converting weights."""

    pre_tokenizer_type: str | None
    """GGUF `tokenizer.ggml.pre`, llama.cpp's name for how text is split before BPE."""
    max_position_embeddings: int | None


def is_converted(target_dir: Path) -> bool:
    """Whether target_dir holds a complete conversion by this converter version."""
    try:
        marker = json.loads((target_dir / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("version") == CONVERTER_VERSION


def convert_gguf(gguf_path: Path, target_dir: Path, *, show_progress: bool = False) -> Path:
    """Convert gguf_path into target_dir unless a complete conversion is already there.

    Safe against concurrent callers: one converts under a file lock, the others wait and reuse.
    Returns target_dir; raises ModelLoadError when the GGUF cannot be read or converted.
    """
    if not is_converted(target_dir):
        with conversion_lock(target_dir):
            if not is_converted(target_dir):
                write_conversion(gguf_path, target_dir, show_progress=show_progress)
    return target_dir


@contextlib.contextmanager
def conversion_lock(target_dir: Path) -> Iterator[None]:
    """Hold the cross-process lock that guards target_dir, and clear leftovers of killed runs.

    Leftovers are the hidden `.<name>.*` siblings (temp, stale and extraction dirs) that only a
    holder of this lock creates. OSErrors inside become ModelLoadError.
    """
    try:
        target_dir.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target_dir.parent / f"{target_dir.name}.lock"), timeout=LOCK_TIMEOUT_S):
            for leftover in target_dir.parent.glob(f".{target_dir.name}.*"):
                shutil.rmtree(leftover, ignore_errors=True)
            yield
    except Timeout as e:
        raise ModelLoadError(
            f"timed out waiting for another process preparing {target_dir}; "
            f"remove {e.lock_file} if no sluice process is running"
        ) from e
    except OSError as e:
        raise ModelLoadError(f"cannot write converted model to {target_dir}: {e}") from e


def write_conversion(gguf_path: Path, target_dir: Path, *, show_progress: bool = False) -> None:
    """Convert into a sibling temp dir, mark it complete, then rename it over target_dir.

    The caller holds conversion_lock(target_dir).
    """
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}.tmp-", dir=target_dir.parent))
    try:
        started = time.perf_counter()
        _write_hf_layout(gguf_path, tmp_dir, show_progress)
        marker = {"version": CONVERTER_VERSION, "source": gguf_path.name}
        (tmp_dir / MARKER_NAME).write_text(json.dumps(marker), encoding="utf-8")
        _replace_dir(tmp_dir, target_dir)
        logger.info(
            "converted %s to %s in %.1fs", gguf_path, target_dir, time.perf_counter() - started
        )
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _replace_dir(src: Path, dst: Path) -> None:
    """Rename src to dst, first moving aside a stale (incomplete or outdated) dst."""
    if dst.exists():
        stale = Path(tempfile.mkdtemp(prefix=f".{dst.name}.stale-", dir=dst.parent))
        os.replace(dst, stale / dst.name)
        shutil.rmtree(stale, ignore_errors=True)
    os.replace(src, dst)


def _write_hf_layout(gguf_path: Path, out_dir: Path, show_progress: bool) -> None:
    """Dequantize gguf_path and write model.safetensors, the packed linears, configs and
    tokenizer into out_dir."""
    try:
        facts = _write_model(gguf_path, out_dir, show_progress)
        _write_tokenizer(gguf_path, out_dir, facts)
        _make_readable(out_dir)
    except ModelLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - gguf/transformers raise anything on a bad file
        raise ModelLoadError(
            f"cannot convert GGUF file {gguf_path}: {_one_line(e)}; "
            "check that it is a complete, unmodified GGUF of an architecture transformers supports"
        ) from e


def _write_model(gguf_path: Path, out_dir: Path, show_progress: bool) -> _GgufFacts:
    """Write fp32 model.safetensors, config.json and generation_config.json."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    started = time.perf_counter()
    config = AutoConfig.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    with _gguf_progress_bar(enabled=show_progress):
        parsed = load_gguf_checkpoint(str(gguf_path), return_tensors=True, model_to_load=model)
    # {hf_name: fp32 tensor}; a tied lm_head is absent and must stay absent.
    state: dict[str, torch.Tensor] = {
        name: tensor.to(torch.float32).contiguous() for name, tensor in parsed["tensors"].items()
    }
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    _check_complete(gguf_path, model.state_dict().keys(), state, config.tie_word_embeddings)
    config.architectures = [type(model).__name__]
    config.dtype = torch.float32
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    write_gguf_linears(gguf_path, out_dir, state, config)
    config.save_pretrained(out_dir)
    GenerationConfig.from_model_config(config).save_pretrained(out_dir)
    num_bytes = sum(t.numel() * t.element_size() for t in state.values())
    logger.info(
        "dequantized %d tensors (%.0f MB fp32) from %s in %.1fs",
        len(state),
        num_bytes / 1e6,
        gguf_path.name,
        time.perf_counter() - started,
    )
    pre_type = parsed.get("tokenizer", {}).get("pre_tokenizer_type")
    return _GgufFacts(
        pre_tokenizer_type=pre_type if isinstance(pre_type, str) else None,
        max_position_embeddings=getattr(config, "max_position_embeddings", None),
    )


def _check_complete(
    gguf_path: Path, expected: Iterable[str], state: Mapping[str, object], is_tied: bool
) -> None:
    """Raise unless state holds every tensor the model declares (a tied lm_head excepted)."""
    missing = sorted(set(expected) - set(state) - ({"lm_head.weight"} if is_tied else set()))
    if missing:
        raise ModelLoadError(
            f"GGUF file {gguf_path} lacks {len(missing)} tensors the model needs "
            f"(first: {missing[0]}); the file is incomplete or of an unsupported layout"
        )


def _write_tokenizer(gguf_path: Path, out_dir: Path, facts: _GgufFacts) -> None:
    """Write tokenizer.json, tokenizer_config.json and the chat template file."""
    from transformers import AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    fix = _PRE_TOKENIZER_FIXES.get(facts.pre_tokenizer_type or "")
    if fix is not None:
        tokenizer.backend_tokenizer.pre_tokenizer = fix()
    if facts.max_position_embeddings is not None:
        tokenizer.model_max_length = facts.max_position_embeddings
    tokenizer.save_pretrained(out_dir)
    _drop_tokenizer_config_keys(out_dir / "tokenizer_config.json")
    logger.info(
        "wrote tokenizer (GGUF pre-tokenizer %s) in %.1fs",
        facts.pre_tokenizer_type,
        time.perf_counter() - started,
    )


def _make_readable(out_dir: Path) -> None:
    """Give the dirs and files the usual modes; mkdtemp and safetensors create 0700/0600."""
    out_dir.chmod(0o755)
    for path in out_dir.iterdir():
        if path.is_dir():
            _make_readable(path)
        else:
            path.chmod(0o644)


def _drop_tokenizer_config_keys(path: Path) -> None:
    """Remove load-time kwargs that save_pretrained() leaks into tokenizer_config.json."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    for key in _TOKENIZER_CONFIG_LOAD_ARTIFACTS:
        data.pop(key, None)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _smollm_pre_tokenizer() -> Any:
    """llama.cpp's `smollm` split: every digit alone, then GPT-2 byte-level words.

    Matches the Digits + ByteLevel sequence of SmolLM's original tokenizer.json; transformers'
    GGUF reader does not know `smollm` and would otherwise merge digit runs.
    """
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )


_PRE_TOKENIZER_FIXES: Final[dict[str, Callable[[], Any]]] = {"smollm": _smollm_pre_tokenizer}
"""GGUF `tokenizer.ggml.pre` values transformers does not map, and the pre-tokenizer each needs."""


@contextlib.contextmanager
def _gguf_progress_bar(*, enabled: bool) -> Iterator[None]:
    """Silence transformers' per-tensor dequantization bar unless progress was asked for.

    The bar is a module-level `tqdm` in transformers' GGUF reader with no switch of its own, so
    it is swapped for a disabled one for the duration of the call.
    """
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    if enabled:
        yield
        return
    original = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def _one_line(error: BaseException) -> str:
    """`Type: first line of message`, short enough for a one-line user error."""
    text = str(error).strip().splitlines()
    first = text[0].rstrip(" .") if text else ""
    return f"{type(error).__name__}: {first[:200]}" if first else type(error).__name__
