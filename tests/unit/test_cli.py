"""build_config: flags, TGI's environment variables as fallbacks, the legacy alias, HOSTNAME;
and main()'s exit code for a contradictory configuration."""

import logging
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice import cli
from sluice.config import DEFAULT_MODEL_ID, SluiceConfig
from sluice.errors import ConfigError


@pytest.fixture(autouse=True)
def _no_tgi_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Containers set HOSTNAME (and CI may set others): start every test from a clean slate."""
    for flag in cli.MODEL_FLAGS + cli.SERVE_FLAGS:
        monkeypatch.delenv(flag.env, raising=False)


@pytest.fixture
def _restore_logging() -> Iterator[None]:
    """main() configures the root logger for the process; undo it for the next tests."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _config(*argv: str) -> SluiceConfig:
    return cli.build_config(cli._build_parser().parse_args(["serve", *argv]))


def test_cli_defaults() -> None:
    config = _config()

    assert config == SluiceConfig()
    assert config.model.model_id == DEFAULT_MODEL_ID
    assert config.scheduler.max_total_tokens is None


def test_cli_flags_fill_the_config() -> None:
    config = _config(
        "--model-id", "org/model", "--revision", "abc123", "--dtype", "float32",
        "--hostname", "127.0.0.1", "-p", "8080", "--max-concurrent-requests", "4",
        "--max-input-tokens", "100", "--max-total-tokens", "200",
        "--max-batch-prefill-tokens", "512", "--max-batch-total-tokens", "4096",
    )  # fmt: skip

    assert (config.model.model_id, config.model.revision) == ("org/model", "abc123")
    assert config.model.dtype == "float32"
    assert (config.server.hostname, config.server.port) == ("127.0.0.1", 8080)
    sched = config.scheduler
    assert (sched.max_concurrent_requests, sched.max_input_tokens) == (4, 100)
    assert (sched.max_total_tokens, sched.max_batch_prefill_tokens) == (200, 512)
    assert sched.max_batch_total_tokens == 4096


def test_cli_reads_tgi_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "MODEL_ID": "org/env-model",
        "MAX_TOTAL_TOKENS": "100",
        "MAX_INPUT_TOKENS": "50",
        "MAX_BATCH_PREFILL_TOKENS": "1000",
        "PORT": "80",
        "DTYPE": "bfloat16",
        "GRACEFUL_TERMINATION_TIMEOUT": "2.5",
    }.items():
        monkeypatch.setenv(name, value)

    config = _config()

    assert config.model.model_id == "org/env-model"
    assert config.model.dtype == "bfloat16"
    assert (config.scheduler.max_total_tokens, config.scheduler.max_input_tokens) == (100, 50)
    assert config.scheduler.max_batch_prefill_tokens == 1000
    assert config.server.port == 80
    assert config.server.graceful_termination_timeout == 2.5


def test_cli_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_TOTAL_TOKENS", "100")
    monkeypatch.setenv("PORT", "80")

    config = _config("--max-total-tokens", "300", "--port", "9000")

    assert (config.scheduler.max_total_tokens, config.server.port) == (300, 9000)


def test_cli_empty_environment_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "")

    assert _config().server.port == 3000


def test_cli_bad_environment_value_names_variable_and_flag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAX_TOTAL_TOKENS", "lots")

    with pytest.raises(ConfigError, match="MAX_TOTAL_TOKENS='lots' .* `--max-total-tokens`"):
        _config()


def test_cli_max_input_length_is_an_alias_of_max_input_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _config("--max-input-length", "70").scheduler.max_input_tokens == 70
    monkeypatch.setenv("MAX_INPUT_LENGTH", "60")
    assert _config().scheduler.max_input_tokens == 60


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (("--max-input-tokens", "50", "--max-input-length", "60"), {}),
        (("--max-input-tokens", "50"), {"MAX_INPUT_LENGTH": "60"}),
        ((), {"MAX_INPUT_TOKENS": "50", "MAX_INPUT_LENGTH": "60"}),
    ],
)
def test_cli_alias_and_new_flag_together_is_an_error(
    monkeypatch: pytest.MonkeyPatch, argv: tuple[str, ...], env: dict[str, str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(
        ConfigError, match=r"Both `max_input_tokens` \(50\) and `max_input_length` \(60\)"
    ):
        _config(*argv)


@pytest.mark.parametrize("hostname", ["my-container-3f2a", "localhost"])
def test_cli_non_ip_hostname_falls_back_to_all_interfaces(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, hostname: str
) -> None:
    monkeypatch.setenv("HOSTNAME", hostname)

    with caplog.at_level(logging.WARNING, logger="sluice.cli"):
        assert _config().server.hostname == "0.0.0.0"

    assert "not an IP address" in caplog.text


@pytest.mark.parametrize("hostname", ["127.0.0.1", "::1", "0.0.0.0"])
def test_cli_ip_hostname_is_kept(monkeypatch: pytest.MonkeyPatch, hostname: str) -> None:
    monkeypatch.setenv("HOSTNAME", hostname)

    assert _config().server.hostname == hostname


def test_cli_rejects_an_unknown_dtype_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        _config("--dtype", "int4")

    assert raised.value.code == 2
    assert "--dtype" in capsys.readouterr().err


def test_cli_download_has_model_flags_only() -> None:
    parser = cli._build_parser()

    args = parser.parse_args(["download", "--model-id", "org/model", "--revision", "v1"])

    assert (args.model_id, args.revision) == ("org/model", "v1")
    with pytest.raises(SystemExit):
        parser.parse_args(["download", "--port", "80"])


@pytest.mark.usefixtures("_restore_logging")
def test_cli_main_contradictory_limits_exit_2_naming_both_flags(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    launcher = types.ModuleType("sluice.launcher")
    launcher.serve = _must_not_serve  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sluice.launcher", launcher)

    code = cli.main(["serve", "--max-input-tokens", "100", "--max-total-tokens", "100"])

    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("sluice: error: ")
    assert "--max-input-tokens" in err and "--max-total-tokens" in err


def _must_not_serve(config: SluiceConfig) -> int:
    raise AssertionError("main() went on to load the model")


@pytest.mark.parametrize(
    ("argv", "env", "flag"),
    [
        (("--max-concurrent-requests", "0"), {}, "--max-concurrent-requests"),
        (("--max-batch-prefill-tokens", "0"), {}, "--max-batch-prefill-tokens"),
        (("--port", "0"), {}, "--port"),
        ((), {"MAX_CONCURRENT_REQUESTS": "0"}, "--max-concurrent-requests"),
    ],
)
def test_cli_zero_is_rejected_not_replaced_by_the_default(
    monkeypatch: pytest.MonkeyPatch, argv: tuple[str, ...], env: dict[str, str], flag: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(ConfigError, match=f"`{flag}` must be"):
        _config(*argv)


def test_cli_reads_the_api_key_from_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("Sesame-42\n")

    config = _config("--api-key-file", str(key_file))

    assert config.server.api_key == "Sesame-42"


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        ("", (), "holds no key on its first line"),
        (None, (), "cannot read"),
        ("Sesame-42", ("--api-key", "other"), "`--api-key` or `--api-key-file`, not both"),
    ],
)
def test_cli_refuses_an_unusable_api_key_file(
    tmp_path: Path, content: str | None, extra: tuple[str, ...], message: str
) -> None:
    key_file = tmp_path / "key"
    if content is not None:
        key_file.write_text(content)

    with pytest.raises(ConfigError, match=message):
        _config("--api-key-file", str(key_file), *extra)
