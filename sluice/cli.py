"""`sluice serve`, `sluice download`: TGI's launcher flags (with TGI's environment variables as
fallbacks) parsed into one SluiceConfig."""

import argparse
import ipaddress
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from sluice.config import (
    DEFAULT_MODEL_ID,
    DTYPES,
    ModelConfig,
    SchedulerConfig,
    ServerConfig,
    SluiceConfig,
)
from sluice.errors import ConfigError, ModelLoadError
from sluice.log import configure_logging

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Flag:
    name: str
    env: str
    type: type
    help: str
    choices: Sequence[str] | None = None
    aliases: tuple[str, ...] = ()


MODEL_FLAGS = (
    Flag(
        "--model-id",
        "MODEL_ID",
        str,
        f"Hub id, local directory or GGUF file (default: {DEFAULT_MODEL_ID})",
    ),
    Flag("--revision", "REVISION", str, "Hub branch, tag or commit sha"),
)
SERVE_FLAGS = (
    Flag(
        "--dtype",
        "DTYPE",
        str,
        "weights and activations dtype (default: fastest correct for the device)",
        DTYPES,
    ),
    Flag("--hostname", "HOSTNAME", str, "address to listen on (default: 0.0.0.0)"),
    Flag("--port", "PORT", int, "port to listen on (default: 3000)", aliases=("-p",)),
    Flag(
        "--max-concurrent-requests",
        "MAX_CONCURRENT_REQUESTS",
        int,
        "requests in flight before 429 (default: 128)",
    ),
    Flag(
        "--max-input-tokens", "MAX_INPUT_TOKENS", int, "longest prompt in tokens (default: derived)"
    ),
    Flag("--max-input-length", "MAX_INPUT_LENGTH", int, "legacy alias of --max-input-tokens"),
    Flag(
        "--max-total-tokens",
        "MAX_TOTAL_TOKENS",
        int,
        "prompt + generated tokens per request (default: derived)",
    ),
    Flag(
        "--max-batch-prefill-tokens",
        "MAX_BATCH_PREFILL_TOKENS",
        int,
        "tokens computed per step (default: 4096)",
    ),
    Flag(
        "--max-batch-total-tokens",
        "MAX_BATCH_TOTAL_TOKENS",
        int,
        "KV cache capacity in tokens (default: derived from memory)",
    ),
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    configure_logging("server")
    try:
        if args.command == "download":
            return _download(args)
        return _serve(args)
    except ConfigError as error:
        print(f"sluice: error: {error}", file=sys.stderr)
        return 2
    except ModelLoadError as error:
        print(f"sluice: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluice", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve a model over TGI's HTTP API")
    download = commands.add_parser("download", help="fetch and prepare a model ahead of serving")
    for flag in MODEL_FLAGS:
        for command in (serve, download):
            _add_flag(command, flag)
    for flag in SERVE_FLAGS:
        _add_flag(serve, flag)
    return parser


def _add_flag(parser: argparse.ArgumentParser, flag: Flag) -> None:
    help_text = f"{flag.help} [env: {flag.env}]"
    parser.add_argument(
        flag.name, *flag.aliases, type=flag.type, choices=flag.choices, help=help_text
    )


def _value(args: argparse.Namespace, flag_name: str) -> object:
    """The flag's value, else its TGI environment variable, else None."""
    flag = next(f for f in MODEL_FLAGS + SERVE_FLAGS if f.name == flag_name)
    value = getattr(args, flag_name.removeprefix("--").replace("-", "_"), None)
    if value is not None:
        return value
    raw = os.environ.get(flag.env)
    if raw is None or raw == "":
        return None
    try:
        return flag.type(raw)
    except ValueError:
        raise ConfigError(f"{flag.env}={raw!r} is not a valid value for `{flag.name}`") from None


def build_config(args: argparse.Namespace) -> SluiceConfig:
    max_input_tokens = _value(args, "--max-input-tokens")
    max_input_length = _value(args, "--max-input-length")
    if max_input_tokens is not None and max_input_length is not None:
        raise ConfigError(
            f"Both `max_input_tokens` ({max_input_tokens}) and `max_input_length` "
            f"({max_input_length}) are set. Please define only `max_input_tokens` as "
            "`max_input_length` is deprecated"
        )
    defaults = SchedulerConfig()
    return SluiceConfig(
        model=ModelConfig(
            model_id=_str(_value(args, "--model-id")) or DEFAULT_MODEL_ID,
            revision=_str(_value(args, "--revision")),
            dtype=_str(_value(args, "--dtype")),
        ),
        scheduler=SchedulerConfig(
            max_concurrent_requests=_int_or(
                _value(args, "--max-concurrent-requests"), defaults.max_concurrent_requests
            ),
            max_input_tokens=_int(
                max_input_tokens if max_input_tokens is not None else max_input_length
            ),
            max_total_tokens=_int(_value(args, "--max-total-tokens")),
            max_batch_prefill_tokens=_int_or(
                _value(args, "--max-batch-prefill-tokens"), defaults.max_batch_prefill_tokens
            ),
            max_batch_total_tokens=_int(_value(args, "--max-batch-total-tokens")),
        ),
        server=ServerConfig(
            hostname=_listen_address(_str(_value(args, "--hostname"))),
            port=_int_or(_value(args, "--port"), ServerConfig().port),
        ),
    )


def _listen_address(hostname: str | None) -> str:
    """TGI's rule: a value that is not an IP address (Docker sets HOSTNAME to the container
    name) falls back to 0.0.0.0 with a warning."""
    if hostname is None:
        return ServerConfig().hostname
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        logger.warning("hostname %r is not an IP address; listening on 0.0.0.0", hostname)
        return ServerConfig().hostname
    return hostname


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def _int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def _int_or(value: object, default: int) -> int:
    parsed = _int(value)
    return default if parsed is None else parsed


def _serve(args: argparse.Namespace) -> int:
    from sluice.launcher import serve  # heavy imports only once the flags are known good

    return serve(build_config(args))


def _download(args: argparse.Namespace) -> int:
    from sluice.weights.sources import resolve_model

    model_id = _str(_value(args, "--model-id")) or DEFAULT_MODEL_ID
    resolved = resolve_model(model_id, _str(_value(args, "--revision")), show_progress=True)
    print(f"{resolved.model_id} is ready in {resolved.path}")
    return 0
