"""Start-up, readiness and failure of the `sluice serve` process."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sluice.weights.sources import resolve_model
from tests.e2e.server import SHORT_PROMPTS_FLAGS, SluiceServer


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "sluice", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (
            ["--max-input-tokens", "100", "--max-total-tokens", "100"],
            ["--max-input-tokens", "--max-total-tokens"],
        ),
        (
            ["--max-input-tokens", "5000", "--max-batch-prefill-tokens", "4096"],
            ["--max-batch-prefill-tokens", "--max-input-tokens"],
        ),
        (
            ["--max-total-tokens", "9000", "--max-batch-total-tokens", "8000"],
            ["--max-total-tokens", "--max-batch-total-tokens"],
        ),
        (
            ["--max-input-tokens", "10", "--max-input-length", "10"],
            ["max_input_tokens", "max_input_length"],
        ),
        (["--speculator-model-id", "somewhere"], ["--speculator-model-id", "--speculate N"]),
    ],
)
def test_serve_refuses_inconsistent_flags(flags: list[str], named: list[str]) -> None:
    started = time.monotonic()
    result = _run_cli("serve", "--port", "1", *flags)
    assert result.returncode != 0
    assert time.monotonic() - started < 30
    for name in named:
        assert name in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_reports_missing_model_in_one_line(tmp_path: Path) -> None:
    result = _run_cli("serve", "--model-id", str(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "nowhere" in result.stderr


def test_serve_reports_malformed_model_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{ not json")
    result = _run_cli("serve", "--model-id", str(tmp_path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "config.json" in result.stderr


def test_serve_refuses_a_speculator_with_another_tokenizer(tmp_path: Path) -> None:
    model = resolve_model().path
    for name in ("config.json", "tokenizer_config.json", "model.safetensors"):
        (tmp_path / name).symlink_to(model / name)
    tokenizer = json.loads((model / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["sluice-only-token"] = vocab.pop(next(iter(vocab)))
    (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer))

    result = _run_cli("serve", "--speculate", "2", "--speculator-model-id", str(tmp_path))

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "another tokenizer" in result.stderr


def test_env_vars_are_flag_fallbacks() -> None:
    env = {**os.environ, "MAX_INPUT_TOKENS": "100", "MAX_TOTAL_TOKENS": "50"}
    result = subprocess.run(
        [sys.executable, "-m", "sluice", "serve"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    assert "`--max-input-tokens` (100) must be < `--max-total-tokens` (50)" in result.stderr


def test_health_is_503_until_ready_then_engine_death_stops_server(tmp_path: Path) -> None:
    server = SluiceServer(*SHORT_PROMPTS_FLAGS, log_path=tmp_path / "server.log")
    try:
        statuses = server.health_statuses_until_ready()
        assert statuses[0] == 503 and statuses[-1] == 200
        os.kill(server.engine_pid(), signal.SIGKILL)
        statuses = []
        deadline = time.monotonic() + 30
        while server.process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                statuses.append(httpx.get(f"{server.url}/health", timeout=2).status_code)
            time.sleep(0.01)
        # SIGKILL takes a moment to land; once health has failed it never recovers.
        first_failure = next(i for i, status in enumerate(statuses) if status != 200)
        assert all(status == 503 for status in statuses[first_failure:])
        assert server.process.returncode not in (None, 0)
        assert "engine process exited" in (tmp_path / "server.log").read_text()
    finally:
        server.stop()


def test_download_prepares_the_default_model() -> None:
    result = _run_cli("download")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HuggingFaceTB/SmolLM2-135M-Instruct is ready in ")
    model_dir = Path(result.stdout.rsplit(" ", 1)[1].strip())
    assert (model_dir / "config.json").is_file()
    assert list(model_dir.glob("*.safetensors"))


def test_download_reports_a_missing_hub_repo_offline(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "sluice", "download", "--model-id", "nobody/nothing"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1
    assert "nobody/nothing" in result.stderr
    assert "Traceback" not in result.stderr


def _copy_of_default_model(tmp_path: Path, **config_changes: object) -> Path:
    """The default model's files linked into tmp_path, with config.json edited."""
    source = resolve_model().path
    target = tmp_path / "model"
    target.mkdir()
    for file in source.iterdir():
        if file.name != "config.json":
            (target / file.name).symlink_to(file)
    config = json.loads((source / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, **config_changes}))
    return target


@pytest.mark.parametrize(
    ("method", "quantize", "message"),
    [
        ("exl2", (), "the checkpoint is quantized with exl2, which this server cannot run yet"),
        ("gptq", ("--quantize", "awq"), "`--quantize awq` contradicts the checkpoint"),
    ],
)
def test_quantized_checkpoint_is_refused_not_served_wrong(
    tmp_path: Path, method: str, quantize: tuple[str, ...], message: str
) -> None:
    declared = {"quant_method": method, "bits": 4, "group_size": 128}
    model = _copy_of_default_model(tmp_path, quantization_config=declared)
    result = _run_cli("serve", "--model-id", str(model), *quantize)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("config_changes", "message"),
    [
        (
            {"intermediate_size": 1024},
            "mlp.down_proj.weight has shape [576, 1536], the model expects [576, 1024]",
        ),
        (
            {"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 48}},
            "int4 kernels need groups and inputs of a multiple of 32 input features; got group "
            "size 48 for input size 576",
        ),
    ],
)
def test_serve_reports_an_unloadable_checkpoint_in_one_line(
    tmp_path: Path, config_changes: dict[str, object], message: str
) -> None:
    model = _copy_of_default_model(tmp_path, **config_changes)
    error = _the_one_error_line_of_serving(model)
    assert message in error
    assert str(model) in error


def test_serve_reports_a_truncated_weights_file_in_one_line(tmp_path: Path) -> None:
    model = _copy_of_default_model(tmp_path)
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    weights.unlink()
    weights.write_bytes(data[: len(data) // 2])
    assert str(weights) in _the_one_error_line_of_serving(model)


def _the_one_error_line_of_serving(model: Path) -> str:
    """Serve `model`, which must fail to load: exit status 1, no traceback, one error line."""
    result = _run_cli("serve", "--model-id", str(model), *SHORT_PROMPTS_FLAGS)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_quantize_flag_needing_a_quantized_checkpoint_is_refused_on_full_precision() -> None:
    result = _run_cli("serve", "--quantize", "gptq")
    assert result.returncode == 2
    assert "`--quantize gptq` needs a checkpoint quantized with gptq" in result.stderr


def test_more_shards_than_attention_heads_is_refused_naming_the_numbers() -> None:
    result = _run_cli("serve", "--num-shard", "64")
    assert result.returncode == 2
    assert "cannot be split into 64 shards: 64 shards for 9 attention heads" in result.stderr


def test_remote_code_runs_only_with_trust_remote_code(tmp_path: Path) -> None:
    marker = tmp_path / "remote-code-ran"
    auto_map = {"AutoConfig": "configuration_custom.CustomConfig"}
    model = _copy_of_default_model(tmp_path, auto_map=auto_map, model_type="custom-llama")
    (model / "configuration_custom.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "from transformers import LlamaConfig\n\n"
        "class CustomConfig(LlamaConfig):\n    model_type = 'custom-llama'\n"
    )
    refused = _run_cli("serve", "--model-id", str(model), "--port", "1")
    assert refused.returncode == 1
    assert "--trust-remote-code" in refused.stderr
    assert not marker.exists()
    # `--quantize` is checked after the config (and its code) loaded: the run stops there.
    trusted = _run_cli(
        "serve", "--model-id", str(model), "--trust-remote-code", "--quantize", "gptq"
    )
    assert marker.exists()
    assert "`--quantize gptq` needs a checkpoint quantized with gptq" in trusted.stderr
