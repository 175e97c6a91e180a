"""`sluice serve`, `sluice download`: TGI's launcher flags (with TGI's environment variables as
fallbacks) parsed into one SluiceConfig. `sluice bench`, `sluice quantize`: their own flags."""

import argparse
import ipaddress
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sluice.bench.workloads import DEFAULT_CONCURRENCY, WORKLOAD_CHOICES
from sluice.config import (
    DEFAULT_MODEL_ID,
    DTYPES,
    ApiConfig,
    ModelConfig,
    SchedulerConfig,
    ServerConfig,
    ShardingConfig,
    SluiceConfig,
)
from sluice.errors import ConfigError, ModelLoadError
from sluice.log import configure_logging

logger = logging.getLogger(__name__)

SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "sharding": ShardingConfig,
    "scheduler": SchedulerConfig,
    "server": ServerConfig,
    "api": ApiConfig,
}
QUANTIZE_CHOICES = (
    "awq",
    "compressed-tensors",
    "eetq",
    "exl2",
    "gptq",
    "marlin",
    "bitsandbytes",
    "bitsandbytes-nf4",
    "bitsandbytes-fp4",
    "fp8",
    "gguf",
)


SWITCH_VALUES = {"true": True, "1": True, "false": False, "0": False}


def boolean(text: str) -> bool:
    """A flag's true/false value, as TGI's `--sharded true`."""
    if text.lower() not in SWITCH_VALUES:
        raise ValueError(text)
    return SWITCH_VALUES[text.lower()]


@dataclass(frozen=True, slots=True)
class Flag:
    name: str
    env: str
    target: str
    """`section.field` of SluiceConfig that the value fills."""
    help: str
    type: Callable[[str], object] = str
    kind: Literal["value", "switch", "list"] = "value"
    choices: Sequence[str] | None = None
    aliases: tuple[str, ...] = ()


MODEL_FLAGS = (
    Flag(
        "--model-id",
        "MODEL_ID",
        "model.model_id",
        f"Hub id, local dir or GGUF file (default: {DEFAULT_MODEL_ID})",
    ),
    Flag("--revision", "REVISION", "model.revision", "Hub branch, tag or commit sha"),
)
SERVE_FLAGS = (
    Flag(
        "--dtype",
        "DTYPE",
        "model.dtype",
        "weights and activations dtype (default: fastest for the device)",
        choices=DTYPES,
    ),
    Flag(
        "--quantize",
        "QUANTIZE",
        "model.quantize",
        "weight quantization (default: from the checkpoint)",
        choices=QUANTIZE_CHOICES,
    ),
    Flag(
        "--num-shard",
        "NUM_SHARD",
        "sharding.num_shard",
        "tensor-parallel shards over all hosts (default: 1)",
        int,
    ),
    Flag(
        "--sharded",
        "SHARDED",
        "sharding.sharded",
        "true: shard over every visible GPU; false: never shard",
        boolean,
    ),
    Flag("--nnodes", "NNODES", "sharding.nnodes", "hosts the shards spread over (default: 1)", int),
    Flag(
        "--node-rank",
        "NODE_RANK",
        "sharding.node_rank",
        "this host's index; host 0 serves HTTP (default: 0)",
        int,
    ),
    Flag(
        "--master-addr",
        "MASTER_ADDR",
        "sharding.master_addr",
        "address of host 0, where the shards meet (default: localhost)",
    ),
    Flag(
        "--master-port",
        "MASTER_PORT",
        "sharding.master_port",
        "port on host 0 where the shards meet (default: 29500)",
        int,
    ),
    Flag(
        "--trust-remote-code",
        "TRUST_REMOTE_CODE",
        "model.trust_remote_code",
        "let the checkpoint run its own code",
        kind="switch",
    ),
    Flag("--hostname", "HOSTNAME", "server.hostname", "address to listen on (default: 0.0.0.0)"),
    Flag(
        "--port", "PORT", "server.port", "port to listen on (default: 3000)", int, aliases=("-p",)
    ),
    Flag("--api-key", "API_KEY", "server.api_key", "Bearer token required on generation routes"),
    Flag(
        "--api-key-file",
        "API_KEY_FILE",
        "server.api_key_file",
        "file whose first line is the bearer token (keeps it out of `ps`)",
        Path,
    ),
    Flag(
        "--cors-allow-origin",
        "CORS_ALLOW_ORIGIN",
        "server.cors_allow_origin",
        "allowed CORS origin, repeatable (default: any)",
        kind="list",
    ),
    Flag("--json-output", "JSON_OUTPUT", "server.json_output", "log JSON lines", kind="switch"),
    Flag(
        "--client-stall-timeout",
        "CLIENT_STALL_TIMEOUT",
        "server.client_stall_timeout",
        "seconds a response may wait on a client that stopped reading (default: 60)",
        float,
    ),
    Flag(
        "--graceful-termination-timeout",
        "GRACEFUL_TERMINATION_TIMEOUT",
        "server.graceful_termination_timeout",
        "seconds accepted requests may run on after SIGTERM (default: 90)",
        float,
        aliases=("-g",),
    ),
    Flag(
        "--max-connections",
        "MAX_CONNECTIONS",
        "server.max_connections",
        "open connections beyond which a new one gets 503 (default: 1024)",
        int,
    ),
    Flag(
        "--max-header-bytes",
        "MAX_HEADER_BYTES",
        "server.max_header_bytes",
        "largest request line and headers, else 431 (default: 417792)",
        int,
    ),
    Flag(
        "--request-read-timeout",
        "REQUEST_READ_TIMEOUT",
        "server.request_read_timeout",
        "seconds a request may take to arrive whole, else 408 (default: 30)",
        float,
    ),
    Flag(
        "--tcp-keepalive",
        "TCP_KEEPALIVE",
        "server.tcp_keepalive",
        "seconds of silence before TCP keep-alive probes find a vanished client (default: 60)",
        float,
    ),
    Flag(
        "--otlp-endpoint",
        "OTLP_ENDPOINT",
        "server.otlp_endpoint",
        "OpenTelemetry collector for request traces",
    ),
    Flag(
        "--otlp-service-name",
        "OTLP_SERVICE_NAME",
        "server.otlp_service_name",
        "service name on traces",
    ),
    Flag(
        "--max-concurrent-requests",
        "MAX_CONCURRENT_REQUESTS",
        "scheduler.max_concurrent_requests",
        "requests in flight before 429 (default: 128)",
        int,
    ),
    Flag(
        "--max-input-tokens",
        "MAX_INPUT_TOKENS",
        "scheduler.max_input_tokens",
        "longest prompt in tokens (default: derived)",
        int,
    ),
    Flag(
        "--max-input-length",
        "MAX_INPUT_LENGTH",
        "scheduler.max_input_tokens",
        "legacy alias of --max-input-tokens",
        int,
    ),
    Flag(
        "--max-total-tokens",
        "MAX_TOTAL_TOKENS",
        "scheduler.max_total_tokens",
        "prompt + generated tokens per request (default: derived)",
        int,
    ),
    Flag(
        "--max-batch-prefill-tokens",
        "MAX_BATCH_PREFILL_TOKENS",
        "scheduler.max_batch_prefill_tokens",
        "tokens computed per step (default: 4096)",
        int,
    ),
    Flag(
        "--max-batch-total-tokens",
        "MAX_BATCH_TOTAL_TOKENS",
        "scheduler.max_batch_total_tokens",
        "KV cache capacity in tokens (default: derived from memory)",
        int,
    ),
    Flag(
        "--max-prompt-tokens-while-decoding",
        "MAX_PROMPT_TOKENS_WHILE_DECODING",
        "scheduler.max_prompt_tokens_while_decoding",
        "prompt tokens a step adds beside running decodes (default: 128 on CPU, 1024 on GPU)",
        int,
    ),
    Flag(
        "--speculate",
        "SPECULATE",
        "scheduler.speculate",
        "draft tokens per request and step, from n-gram lookup or --speculator-model-id "
        "(default: 0, off)",
        int,
    ),
    Flag(
        "--speculator-model-id",
        "SPECULATOR_MODEL_ID",
        "scheduler.speculator_model_id",
        "draft model for --speculate (hub id or local dir) sharing the model's tokenizer, "
        "instead of n-gram lookup",
    ),
    Flag(
        "--waiting-served-ratio",
        "WAITING_SERVED_RATIO",
        "scheduler.waiting_served_ratio",
        "TGI's; ignored, as TGI ignores it with chunked prefill (default: 0.3)",
        float,
    ),
    Flag(
        "--max-waiting-tokens",
        "MAX_WAITING_TOKENS",
        "scheduler.max_waiting_tokens",
        "TGI's; ignored, as TGI ignores it with chunked prefill (default: 20)",
        int,
    ),
    Flag("--max-best-of", "MAX_BEST_OF", "api.max_best_of", "largest best_of (default: 2)", int),
    Flag(
        "--max-stop-sequences",
        "MAX_STOP_SEQUENCES",
        "api.max_stop_sequences",
        "most stop strings per request (default: 4)",
        int,
    ),
    Flag(
        "--max-top-n-tokens",
        "MAX_TOP_N_TOKENS",
        "api.max_top_n_tokens",
        "largest top_n_tokens (default: 5)",
        int,
    ),
    Flag(
        "--max-client-batch-size",
        "MAX_CLIENT_BATCH_SIZE",
        "api.max_client_batch_size",
        "most prompts per /v1/completions call (default: 4)",
        int,
    ),
    Flag(
        "--payload-limit",
        "PAYLOAD_LIMIT",
        "api.payload_limit",
        "largest request body in bytes (default: 2000000)",
        int,
    ),
    Flag(
        "--enable-prefill-logprobs",
        "ENABLE_PREFILL_LOGPROBS",
        "api.enable_prefill_logprobs",
        "fill details.prefill for decoder_input_details",
        kind="switch",
    ),
    Flag(
        "--disable-grammar-support",
        "DISABLE_GRAMMAR_SUPPORT",
        "api.disable_grammar_support",
        "refuse grammar and response_format",
        kind="switch",
    ),
    Flag(
        "--watermark-gamma",
        "WATERMARK_GAMMA",
        "api.watermark_gamma",
        "watermark green-list share (default: 0.5)",
        float,
    ),
    Flag(
        "--watermark-delta",
        "WATERMARK_DELTA",
        "api.watermark_delta",
        "watermark green-token bias (default: 2.0)",
        float,
    ),
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command != "bench":  # bench reports on stdout; per-request httpx logs are noise
        configure_logging("server")
    try:
        if args.command == "download":
            return _download(args)
        if args.command == "bench":
            return _bench(args)
        if args.command == "quantize":
            return _quantize(args)
        return _serve(args)
    except (ConfigError, ModelLoadError) as error:
        print(f"sluice: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, ConfigError) else 1
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
    _add_bench_flags(commands.add_parser("bench", help="measure any TGI-compatible server"))
    quantize = commands.add_parser(
        "quantize", help="GPTQ- or AWQ-quantize a model into a new checkpoint"
    )
    for flag in MODEL_FLAGS:
        _add_flag(quantize, flag)
    _add_quantize_flags(quantize)
    return parser


def _add_quantize_flags(parser: argparse.ArgumentParser) -> None:
    """GPTQ's knobs, named as in quantize_config.json; not TGI's, so no environment fallbacks."""
    parser.add_argument("--output", type=Path, required=True, help="new, empty checkpoint dir")
    parser.add_argument(
        "--method",
        choices=("gptq", "awq"),
        default="gptq",
        help="gptq: a GPTQ v1 checkpoint; awq: AWQ's scale search, an AutoAWQ GEMM checkpoint "
        "(4-bit, asymmetric) (default: %(default)s)",
    )
    parser.add_argument("--bits", type=int, default=4, help="4 or 8 (default: %(default)s)")
    parser.add_argument(
        "--group-size", type=int, default=128, help="-1: per channel (default: %(default)s)"
    )
    parser.add_argument("--act-order", action="store_true", help="GPTQ desc_act")
    parser.add_argument("--sym", action="store_true", help="zero point fixed at 2**(bits-1)")
    parser.add_argument(
        "--clip-search",
        action="store_true",
        help="fit each group's grid to the shrunk range that rounds it best (AutoGPTQ's mse)",
    )
    parser.add_argument(
        "--calibration-samples", type=int, default=16, help="(default: %(default)s)"
    )
    parser.add_argument("--seq-len", type=int, default=512, help="tokens per sample")


def _add_bench_flags(parser: argparse.ArgumentParser) -> None:
    """The load generator's flags: not TGI's, so no environment fallbacks."""
    parser.add_argument(
        "--url", default="http://127.0.0.1:3000", help="server to measure (default: %(default)s)"
    )
    parser.add_argument(
        "--workload",
        required=True,
        choices=WORKLOAD_CHOICES,
        help="w1: one stream; w2: 64 prompts at once; w3: copy-heavy, one stream; "
        "sweep: W2's prompts at each --concurrency (shared/bench/WORKLOADS.md)",
    )
    parser.add_argument(
        "--runs", type=_positive_int, default=3, help="runs per workload (default: 3)"
    )
    parser.add_argument(
        "--concurrency",
        type=_concurrency_levels,
        help="requests in flight at each sweep step, comma-separated "
        f"(default: {','.join(map(str, DEFAULT_CONCURRENCY))})",
    )
    parser.add_argument(
        "--max-new-tokens", type=_positive_int, help="tokens per request (default: 128)"
    )
    parser.add_argument("--num-prompts", type=_positive_int, help="use only the first N prompts")
    parser.add_argument("--output", type=Path, help="directory for the JSON results and PNGs")
    parser.add_argument(
        "--no-ignore-eos",
        dest="ignore_eos",
        action="store_false",
        help="let requests stop at EOS (by default they ask to ignore it, a sluice extension)",
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _concurrency_levels(text: str) -> tuple[int, ...]:
    try:
        return tuple(_positive_int(item) for item in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,4,16, got {text!r}") from None


def _add_flag(parser: argparse.ArgumentParser, flag: Flag) -> None:
    names = (flag.name, *flag.aliases)
    help_text = f"{flag.help} [env: {flag.env}]"
    dest = _dest(flag)
    if flag.kind == "switch":
        parser.add_argument(*names, dest=dest, action="store_true", default=None, help=help_text)
    elif flag.kind == "list":
        parser.add_argument(*names, dest=dest, action="append", help=help_text)
    else:
        parser.add_argument(*names, dest=dest, type=flag.type, choices=flag.choices, help=help_text)


def _dest(flag: Flag) -> str:
    return flag.name.removeprefix("--").replace("-", "_")


def _value(args: argparse.Namespace, flag: Flag) -> object:
    """The flag's value, else its TGI environment variable, else None."""
    value = getattr(args, _dest(flag), None)
    if value is not None:
        return tuple(value) if flag.kind == "list" else value
    raw = os.environ.get(flag.env)
    if raw is None or raw == "":
        return None
    if flag.kind == "switch":
        if raw.lower() not in SWITCH_VALUES:
            raise ConfigError(f"{flag.env}={raw!r} must be true or false")
        return SWITCH_VALUES[raw.lower()]
    if flag.kind == "list":
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    try:
        parsed = flag.type(raw)
    except ValueError:
        raise ConfigError(f"{flag.env}={raw!r} is not a valid value for `{flag.name}`") from None
    if flag.choices is not None and parsed not in flag.choices:
        raise ConfigError(f"{flag.env}={raw!r} must be one of {', '.join(flag.choices)}")
    return parsed


def build_config(args: argparse.Namespace) -> SluiceConfig:
    flags = MODEL_FLAGS + (SERVE_FLAGS if args.command == "serve" else ())
    values = {flag.name: _value(args, flag) for flag in flags}
    max_input_tokens = values.get("--max-input-tokens")
    max_input_length = values.get("--max-input-length")
    if max_input_tokens is not None and max_input_length is not None:
        raise ConfigError(
            f"Both `max_input_tokens` ({max_input_tokens}) and `max_input_length` "
            f"({max_input_length}) are set. Please define only `max_input_tokens` as "
            "`max_input_length` is deprecated"
        )
    sections: dict[str, dict[str, object]] = {name: {} for name in SECTIONS}
    for flag in flags:
        value = values[flag.name]
        if value is not None:
            section, field = flag.target.split(".")
            sections[section][field] = value
    if os.environ.get("COMPUTE_TYPE"):  # TGI reads it from the environment only
        sections["server"]["compute_type"] = os.environ["COMPUTE_TYPE"]
    if "hostname" in sections["server"]:
        sections["server"]["hostname"] = _listen_address(str(sections["server"]["hostname"]))
    key_file = values.get("--api-key-file")
    if key_file is not None:
        if values.get("--api-key") is not None:
            raise ConfigError("give the API key with `--api-key` or `--api-key-file`, not both")
        sections["server"]["api_key"] = _read_api_key(Path(str(key_file)))
    return SluiceConfig(**{name: SECTIONS[name](**fields) for name, fields in sections.items()})


def _read_api_key(path: Path) -> str:
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise ConfigError(f"`--api-key-file`: cannot read {path}: {error.strerror}") from error
    key = lines[0].strip() if lines else ""
    if not key:
        raise ConfigError(f"`--api-key-file`: {path} holds no key on its first line")
    return key


def _listen_address(hostname: str) -> str:
    """TGI's rule: a value that is not an IP address (Docker sets HOSTNAME to the container
    name) falls back to 0.0.0.0 with a warning."""
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        default = ServerConfig().hostname
        logger.warning("hostname %r is not an IP address; listening on %s", hostname, default)
        return default
    return hostname


def _serve(args: argparse.Namespace) -> int:
    config = build_config(args)
    configure_logging("server", json_output=config.server.json_output)
    from sluice.launcher import serve  # heavy imports only once the flags are known good

    return serve(config)


def _bench(args: argparse.Namespace) -> int:
    from sluice.bench.command import BenchOptions, run_bench

    if args.concurrency is not None and args.workload != "sweep":
        raise ConfigError("`--concurrency` applies to `--workload sweep` only")
    options = BenchOptions(
        url=args.url.rstrip("/"),
        workload=args.workload,
        runs=args.runs,
        concurrency_levels=args.concurrency or DEFAULT_CONCURRENCY,
        max_new_tokens=args.max_new_tokens,
        num_prompts=args.num_prompts,
        output=args.output,
        ignore_eos=args.ignore_eos,
    )
    return run_bench(options)


def _quantize(args: argparse.Namespace) -> int:
    from sluice.quantization.quantize_command import QuantizeOptions, run_quantize

    model = build_config(args).model
    options = QuantizeOptions(
        model.model_id,
        model.revision,
        args.output,
        args.method,
        args.bits,
        args.group_size,
        args.act_order,
        args.sym,
        args.clip_search,
        args.calibration_samples,
        args.seq_len,
    )
    return run_quantize(options)


def _download(args: argparse.Namespace) -> int:
    from sluice.weights.sources import resolve_model

    model = build_config(args).model
    resolved = resolve_model(model.model_id, model.revision, show_progress=True)
    print(f"{resolved.model_id} is ready in {resolved.path}")
    return 0
