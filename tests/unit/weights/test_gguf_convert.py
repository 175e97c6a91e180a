"""GGUF conversion: tiny synthetic GGUFs round-trip exactly, bad files fail with one line, and
the real embedded default model converts into a loadable directory (slow)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from sluice.errors import ModelLoadError
from sluice.weights.gguf_convert import MARKER_NAME, convert_gguf, is_converted
from sluice.weights.safetensors_reader import iter_checkpoint_tensors
from sluice.weights.sources import DEFAULT_MODEL_ID, resolve_model

MakeGguf = Callable[..., Any]


@pytest.mark.parametrize("is_tied", [False, True])
def test_resolve_model_gguf_round_trips_tensors(
    make_tiny_gguf: MakeGguf, tmp_path: Path, is_tied: bool
) -> None:
    tiny = make_tiny_gguf(is_tied=is_tied)
    gguf_path, expected = tiny.path, tiny.state
    resolved = resolve_model(str(gguf_path), cache_dir=tmp_path / "cache")
    assert resolved.model_id == gguf_path.name
    assert resolved.sha is None
    assert resolved.path.parent == tmp_path / "cache" / "gguf"
    assert resolved.path.name.startswith("tiny-")
    tensors = dict(iter_checkpoint_tensors(resolved.path))
    assert tensors.keys() == expected.keys()  # a tied lm_head is not written
    for name, tensor in tensors.items():
        assert tensor.dtype == torch.float32
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0)
    config = json.loads((resolved.path / "config.json").read_text())
    assert config["dtype"] == "float32"
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["tie_word_embeddings"] is is_tied


def test_gguf_conversion_writes_tokenizer_and_generation_config(
    make_tiny_gguf: MakeGguf, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    gguf_path = make_tiny_gguf().path
    out = convert_gguf(gguf_path, tmp_path / "out")
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.eos_token == "</s>"
    assert tokenizer.encode("hello") == [10]
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert rendered == "<s>hi</s>"
    assert tokenizer.model_max_length == 128
    generation = json.loads((out / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"]) == (1, 2)
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    assert "local_files_only" not in tokenizer_config


def test_gguf_conversion_is_reused(
    make_tiny_gguf: MakeGguf, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gguf_path = make_tiny_gguf().path
    caplog.set_level(logging.INFO, logger="sluice.weights.gguf_convert")
    first = resolve_model(str(gguf_path), cache_dir=tmp_path)
    second = resolve_model(str(gguf_path), cache_dir=tmp_path)
    assert first == second
    assert sum("converted" in record.message for record in caplog.records) == 1


def test_gguf_conversion_redone_when_marker_missing(
    make_tiny_gguf: MakeGguf, tmp_path: Path
) -> None:
    gguf_path = make_tiny_gguf().path
    target = tmp_path / "out"
    target.mkdir()
    (target / "config.json").write_text("{half written")
    (tmp_path / ".out.tmp-killed").mkdir()  # left by a conversion that was killed
    assert not is_converted(target)
    convert_gguf(gguf_path, target)
    assert is_converted(target)
    assert json.loads((target / "config.json").read_text())["model_type"] == "llama"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_gguf_conversion_concurrent_callers_convert_once(
    make_tiny_gguf: MakeGguf, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gguf_path = make_tiny_gguf().path
    caplog.set_level(logging.INFO, logger="sluice.weights.gguf_convert")
    errors: list[BaseException] = []

    def convert() -> None:
        try:
            convert_gguf(gguf_path, tmp_path / "out")
        except BaseException as e:  # noqa: BLE001 - surfaced by the assert below
            errors.append(e)

    threads = [threading.Thread(target=convert) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum("converted" in record.message for record in caplog.records) == 1
    assert is_converted(tmp_path / "out")


def test_gguf_conversion_quiet_without_show_progress(
    make_tiny_gguf: MakeGguf, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    gguf_path = make_tiny_gguf().path
    convert_gguf(gguf_path, tmp_path / "quiet")
    assert "de-quantizing" not in capfd.readouterr().err
    convert_gguf(gguf_path, tmp_path / "loud", show_progress=True)
    assert "de-quantizing" in capfd.readouterr().err


@pytest.mark.parametrize(
    "content", [b"", b"GGUF garbage that is not a header", b"not a gguf at all" * 100]
)
def test_resolve_model_corrupt_gguf(tmp_path: Path, content: bytes) -> None:
    gguf_path = tmp_path / "broken.gguf"
    gguf_path.write_bytes(content)
    with pytest.raises(ModelLoadError) as excinfo:
        resolve_model(str(gguf_path), cache_dir=tmp_path / "cache")
    message = str(excinfo.value)
    assert "\n" not in message
    assert str(gguf_path) in message
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_dir() and p.name != "gguf"]
    assert leftovers == []  # neither a target nor a temp dir survives a failed conversion


def test_resolve_model_truncated_gguf(make_tiny_gguf: MakeGguf, tmp_path: Path) -> None:
    gguf_path = make_tiny_gguf().path
    data = gguf_path.read_bytes()
    gguf_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="cannot convert GGUF file"):
        resolve_model(str(gguf_path), cache_dir=tmp_path / "cache")


@pytest.mark.slow
def test_resolve_model_default_converts_embedded_gguf() -> None:
    """Uses the user's sluice cache, so only the first run downloads and converts (~20 s)."""
    from transformers import AutoTokenizer

    resolved = resolve_model()
    assert resolved.model_id == DEFAULT_MODEL_ID
    assert resolved.sha is None
    assert resolved.path.name == "SmolLM2-135M-Instruct-Q4_1"
    assert (resolved.path / MARKER_NAME).is_file()
    config = json.loads((resolved.path / "config.json").read_text())
    assert config["num_hidden_layers"] == 30
    assert config["dtype"] == "float32"
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 2)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.encode("Hello, world! 123") == [19556, 28, 905, 17, 216, 33, 34, 35]
    with safe_open(resolved.path / "model.safetensors", framework="pt") as weights:
        names = set(weights.keys())
        embed = weights.get_tensor("model.embed_tokens.weight")
    assert "lm_head.weight" not in names
    assert len(names) == 272
    assert embed.shape == (49152, 576)
    assert embed.dtype == torch.float32
