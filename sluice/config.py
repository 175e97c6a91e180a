"""Launcher settings as frozen values, and the cross-checks between them.

`cli.py` fills these from flags and TGI's environment variables; components receive the
sub-config they need. Facts found at start-up (KV capacity, effective token limits) live in
`ServingLimits`, never written back into a config."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from sluice.errors import ConfigError

DEFAULT_MODEL_ID: Final = "HuggingFaceTB/SmolLM2-135M-Instruct"
DTYPES: Final = ("float32", "bfloat16", "float16")


@dataclass(frozen=True, slots=True)
class ModelConfig:
    model_id: str = DEFAULT_MODEL_ID
    """Hub id, local directory (HF layout) or GGUF file (TGI: MODEL_ID)."""
    revision: str | None = None
    """Hub branch, tag or commit (TGI: REVISION)."""
    dtype: str | None = None
    """Activation and weight dtype; None picks the fastest correct one for the device."""
    trust_remote_code: bool = False
    """Allow a checkpoint's own Python code to run (TGI: TRUST_REMOTE_CODE)."""
    quantize: str | None = None
    """Weight quantization method; None detects it from the checkpoint (TGI: QUANTIZE)."""


@dataclass(frozen=True, slots=True)
class ShardingConfig:
    """Tensor parallelism over the devices of one host or of several (see
    distributed/topology.py, which also reads torchrun's environment)."""

    num_shard: int | None = None
    """Shards over all hosts (TGI: NUM_SHARD); None: 1, or every GPU with `sharded`."""
    sharded: bool | None = None
    """TGI's SHARDED: true shards over every visible GPU, false forbids sharding."""
    nnodes: int = 1
    """Hosts the shards spread over, each running num_shard / nnodes (vLLM's name)."""
    node_rank: int = 0
    """This host's index among them; host 0 serves HTTP (vLLM's name)."""
    master_addr: str = "localhost"
    """Where host 0's first shard listens for the others (TGI: MASTER_ADDR)."""
    master_port: int = 29500
    """(TGI: MASTER_PORT)."""


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    max_concurrent_requests: int = 128
    """Requests in flight at once; more get 429 (TGI: MAX_CONCURRENT_REQUESTS)."""
    max_input_tokens: int | None = None
    """Longest prompt in tokens; None derives max_total_tokens - 1, capped by the prefill budget."""
    max_total_tokens: int | None = None
    """Prompt plus generated tokens per request; None derives it from the model and KV cache."""
    max_batch_prefill_tokens: int = 4096
    """Tokens computed in one step, decodes and prompt chunks together."""
    max_batch_total_tokens: int | None = None
    """KV cache capacity in tokens; None derives it from the memory there is."""
    max_prompt_tokens_while_decoding: int | None = None
    """Prompt tokens a step computes beside running decodes; None picks the device's default.
    Small on a CPU, where a step's time grows with its tokens and every stream waits for it."""
    waiting_served_ratio: float = 0.3
    """TGI's; like TGI with chunked prefill (always on in sluice), accepted and not used."""
    max_waiting_tokens: int = 20
    """TGI's; like TGI with chunked prefill (always on in sluice), accepted and not used."""
    speculate: int = 0
    """Draft tokens per request and step, verified in the same forward pass (TGI's
    `--speculate`); 0 turns speculation off. Drafts come from n-gram lookup, or from
    `speculator_model_id` when one is set."""
    speculator_model_id: str | None = None
    """A smaller model sharing the served model's tokenizer (hub id or local directory) whose
    own next tokens are the drafts, run by the same engine with its own KV cache."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    hostname: str = "0.0.0.0"
    port: int = 3000
    api_key: str | None = None
    """Bearer token required on every route but health and info (TGI: API_KEY); read from
    `api_key_file` when that is given."""
    api_key_file: Path | None = None
    """A file whose first line is the API key, so that the key stays out of `ps` (sluice's
    `--api-key-file`, API_KEY_FILE)."""
    cors_allow_origin: tuple[str, ...] = ()
    """Origins allowed by CORS (TGI: CORS_ALLOW_ORIGIN); empty sends no CORS headers, so that
    browsers keep other sites' pages from reading answers (TGI allows any origin then)."""
    json_output: bool = False
    """Log JSON lines (TGI: JSON_OUTPUT)."""
    otlp_endpoint: str | None = None
    """OpenTelemetry collector for request traces (TGI: OTLP_ENDPOINT)."""
    otlp_service_name: str = "text-generation-inference.router"
    """Service name on exported traces (TGI: OTLP_SERVICE_NAME)."""
    compute_type: str | None = None
    """Value of the x-compute-type response header (TGI: COMPUTE_TYPE, no flag)."""
    client_stall_timeout: float = 60.0
    """Seconds a response may wait on a client that stopped reading before its request is
    aborted and its KV blocks freed (sluice's `--client-stall-timeout`)."""
    graceful_termination_timeout: float = 90.0
    """Seconds that accepted requests may run on after SIGTERM or SIGINT (TGI:
    GRACEFUL_TERMINATION_TIMEOUT)."""
    max_connections: int = 1024
    """Open connections beyond which a new one is answered 503 and closed (sluice's)."""
    max_header_bytes: int = 8192 + 4096 * 100
    """Largest request line and headers, else 431: hyper's read buffer, which bounds them in
    TGI (sluice's flag)."""
    request_read_timeout: float = 30.0
    """Seconds a request may take to arrive whole, else 408 (sluice's; hyper's header read
    timeout, which TGI uses, is 30 s and covers the head only)."""
    tcp_keepalive: float = 60.0
    """Seconds of silence on a connection before TCP keep-alive probes; a peer gone without
    closing is noticed after about twice this and its request aborted (sluice's)."""


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """Per-request limits and switches of the HTTP API (TGI's router flags)."""

    max_best_of: int = 2
    """Largest `best_of` (TGI: MAX_BEST_OF)."""
    max_stop_sequences: int = 4
    """Most stop strings per request (TGI: MAX_STOP_SEQUENCES)."""
    max_top_n_tokens: int = 5
    """Largest `top_n_tokens` and `top_logprobs` (TGI: MAX_TOP_N_TOKENS)."""
    max_client_batch_size: int = 4
    """Most prompts in one /v1/completions call (TGI: MAX_CLIENT_BATCH_SIZE)."""
    payload_limit: int = 2_000_000
    """Largest request body in bytes; bigger ones get 413 (TGI: PAYLOAD_LIMIT)."""
    enable_prefill_logprobs: bool = False
    """Fill `details.prefill` when `decoder_input_details` asks (TGI: ENABLE_PREFILL_LOGPROBS)."""
    disable_grammar_support: bool = False
    """Refuse `grammar` and `response_format` (TGI: DISABLE_GRAMMAR_SUPPORT)."""
    watermark_gamma: float = 0.5
    """Share of the vocabulary on the watermark's green list (TGI: WATERMARK_GAMMA)."""
    watermark_delta: float = 2.0
    """Logit bias added to green tokens (TGI: WATERMARK_DELTA)."""


@dataclass(frozen=True, slots=True)
class SluiceConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    sharding: ShardingConfig = field(default_factory=ShardingConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    api: ApiConfig = field(default_factory=ApiConfig)

    def __post_init__(self) -> None:
        check_config(self)


@dataclass(frozen=True, slots=True)
class ServingLimits:
    """Effective limits after the engine has loaded the model and sized its KV cache."""

    max_input_tokens: int
    max_total_tokens: int
    max_batch_prefill_tokens: int
    max_batch_total_tokens: int
    block_size: int
    num_kv_blocks: int


def check_config(config: SluiceConfig) -> None:
    """Reject settings that contradict each other, naming the flags involved."""
    if config.model.dtype is not None and config.model.dtype not in DTYPES:
        raise ConfigError(f"`--dtype` must be one of {', '.join(DTYPES)}; got {config.model.dtype}")
    if not 0 < config.server.port < 65536:
        raise ConfigError(f"`--port` must be between 1 and 65535; got {config.server.port}")
    _check_sharding(config.sharding)
    for flag, value in (
        ("--client-stall-timeout", config.server.client_stall_timeout),
        ("--max-connections", config.server.max_connections),
        ("--max-header-bytes", config.server.max_header_bytes),
        ("--request-read-timeout", config.server.request_read_timeout),
        ("--tcp-keepalive", config.server.tcp_keepalive),
    ):
        _require_positive(flag, value)
    if config.server.graceful_termination_timeout < 0:
        raise ConfigError(
            "`--graceful-termination-timeout` must be >= 0; got "
            f"{config.server.graceful_termination_timeout}"
        )
    api = config.api
    for flag, value in (
        ("--max-best-of", api.max_best_of),
        ("--max-client-batch-size", api.max_client_batch_size),
        ("--payload-limit", api.payload_limit),
    ):
        _require_positive(flag, value)
    if api.max_stop_sequences < 0 or api.max_top_n_tokens < 0:
        raise ConfigError("`--max-stop-sequences` and `--max-top-n-tokens` must be >= 0")
    sched = config.scheduler
    _require_positive("--max-concurrent-requests", sched.max_concurrent_requests)
    _require_positive("--max-batch-prefill-tokens", sched.max_batch_prefill_tokens)
    _require_positive("--max-waiting-tokens", sched.max_waiting_tokens)
    if sched.speculate < 0:
        raise ConfigError(f"`--speculate` must be >= 0; got {sched.speculate}")
    if sched.speculator_model_id is not None and sched.speculate == 0:
        raise ConfigError(
            "`--speculator-model-id` needs `--speculate N`: how many draft tokens the "
            "speculator proposes per request and step"
        )
    if sched.waiting_served_ratio < 0:
        raise ConfigError(
            f"`--waiting-served-ratio` must be >= 0; got {sched.waiting_served_ratio}"
        )
    for flag, value in (
        ("--max-input-tokens", sched.max_input_tokens),
        ("--max-total-tokens", sched.max_total_tokens),
        ("--max-batch-total-tokens", sched.max_batch_total_tokens),
        ("--max-prompt-tokens-while-decoding", sched.max_prompt_tokens_while_decoding),
    ):
        if value is not None:
            _require_positive(flag, value)
    max_input, max_total = sched.max_input_tokens, sched.max_total_tokens
    if max_input is not None and max_total is not None and max_input >= max_total:
        raise ConfigError(
            f"`--max-input-tokens` ({max_input}) must be < `--max-total-tokens` ({max_total})"
        )
    if max_input is not None and max_input > sched.max_batch_prefill_tokens:
        raise ConfigError(
            "`--max-batch-prefill-tokens` must be >= `--max-input-tokens`. "
            f"Given: {sched.max_batch_prefill_tokens} and {max_input}"
        )
    batch_total = sched.max_batch_total_tokens
    if batch_total is not None:
        if max_total is not None and max_total > batch_total:
            raise ConfigError(
                "`--max-total-tokens` must be <= `--max-batch-total-tokens`. "
                f"Given: {max_total} and {batch_total}"
            )
        if sched.max_batch_prefill_tokens > batch_total:
            raise ConfigError(
                "`--max-batch-prefill-tokens` must be <= `--max-batch-total-tokens`. "
                f"Given: {sched.max_batch_prefill_tokens} and {batch_total}"
            )


def derive_limits(
    sched: SchedulerConfig,
    *,
    kv_capacity_tokens: int,
    max_position_embeddings: int,
    block_size: int,
) -> ServingLimits:
    """Fill the token limits the user left unset, as TGI's warm-up does, and check they fit."""
    max_total = sched.max_total_tokens or min(kv_capacity_tokens, max_position_embeddings)
    if max_total > kv_capacity_tokens:
        raise ConfigError(
            f"Not enough memory to handle `max_total_tokens={max_total}`: the KV cache holds "
            f"{kv_capacity_tokens} tokens"
        )
    max_input = sched.max_input_tokens or min(max_total - 1, sched.max_batch_prefill_tokens)
    if max_input >= max_total:
        raise ConfigError(
            f"`--max-input-tokens` ({max_input}) must be < `--max-total-tokens` ({max_total})"
        )
    return ServingLimits(
        max_input_tokens=max_input,
        max_total_tokens=max_total,
        max_batch_prefill_tokens=sched.max_batch_prefill_tokens,
        max_batch_total_tokens=kv_capacity_tokens,
        block_size=block_size,
        num_kv_blocks=kv_capacity_tokens // block_size,
    )


def _check_sharding(sharding: ShardingConfig) -> None:
    if sharding.num_shard is not None:
        _require_positive("--num-shard", sharding.num_shard)
    if sharding.sharded is True and sharding.num_shard is not None and sharding.num_shard <= 1:
        raise ConfigError("`sharded` is true but `num_shard` <= 1")
    if sharding.sharded is False and (sharding.num_shard or 1) > 1:
        raise ConfigError(f"`sharded` is false but `num_shard` is {sharding.num_shard}")
    _require_positive("--nnodes", sharding.nnodes)
    if not 0 <= sharding.node_rank < sharding.nnodes:
        raise ConfigError(
            f"`--node-rank` must be between 0 and `--nnodes` - 1 ({sharding.nnodes - 1}); "
            f"got {sharding.node_rank}"
        )
    if sharding.nnodes > 1 and (sharding.num_shard or 1) % sharding.nnodes:
        raise ConfigError(
            f"`--num-shard` ({sharding.num_shard or 1}) counts the shards of all hosts and must "
            f"divide by `--nnodes` ({sharding.nnodes})"
        )
    if not 0 < sharding.master_port < 65536:
        raise ConfigError(
            f"`--master-port` must be between 1 and 65535; got {sharding.master_port}"
        )


def _require_positive(flag: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"`{flag}` must be > 0; got {value}")
