"""Every message that crosses the API-process / engine-process boundary.

The frontend sends `EngineInput` (add or abort requests); the engine answers with
`EngineOutput`: one `EngineReady` (or `EngineFailed`) at start-up, then one `StepOutputs` per
step carrying each request's new tokens and the step's statistics."""

import enum

import msgspec

from sluice.config import ServingLimits
from sluice.sampling_params import SamplingParams


class FinishReason(enum.StrEnum):
    LENGTH = "length"
    EOS_TOKEN = "eos_token"
    STOP_SEQUENCE = "stop_sequence"


class AddRequest(msgspec.Struct, frozen=True, tag="add"):
    request_id: str
    prompt_token_ids: list[int]
    sampling: SamplingParams


class AbortRequests(msgspec.Struct, frozen=True, tag="abort"):
    """Drop these requests (client gone, or a stop string matched) at the next step."""

    request_ids: list[str]


EngineInput = AddRequest | AbortRequests


class RequestOutput(msgspec.Struct, frozen=True, omit_defaults=True):
    """What one step produced for one request."""

    request_id: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: FinishReason | None = None
    error: str | None = None
    """Set when generation failed; the request is over."""
    top_token_ids: list[list[int]] = []
    """One list per token of `token_ids` when the request asked for `top_n_tokens`: the most
    likely tokens at that position, best first."""
    top_logprobs: list[list[float]] = []
    """The logprobs of `top_token_ids`, list for list."""
    prompt_logprobs: list[float] = []
    """On the first output of a request that asked for prompt logprobs: the logprob of each
    prompt token after the first (NaN where unknown)."""
    queue_s: float | None = None
    """On the first output: seconds the request waited in the engine before its first step."""


class StepStats(msgspec.Struct, frozen=True):
    step_index: int
    num_requests: int
    """Requests computed in this step (the batch size)."""
    num_prefill_tokens: int
    num_decode_tokens: int
    duration_s: float
    num_waiting: int
    num_running: int
    num_free_blocks: int
    """Blocks no request holds, cached prefix blocks included: those are evictable."""
    num_blocks: int
    block_size: int
    num_failed_requests: int = 0
    """Requests of the step that ended with an error."""
    num_preemptions: int = 0
    """Requests preempted since the engine started: a running total, so that a receiver can
    turn it into a counter without missing a step."""
    prefix_cache_queried_tokens: int = 0
    """Known tokens of the requests looked up in the prefix cache at admission, since start."""
    prefix_cache_hit_tokens: int = 0
    """Of those, the tokens found cached (their K/V reused, not computed), since start."""
    num_draft_tokens: int = 0
    """Draft tokens verified in this step (`--speculate`)."""
    accepted_drafts: list[int] = []
    """Per request that verified drafts in this step: how many it kept."""


class StepOutputs(msgspec.Struct, frozen=True, tag="step"):
    outputs: list[RequestOutput]
    stats: StepStats


class EngineReady(msgspec.Struct, frozen=True, tag="ready"):
    limits: ServingLimits
    dtype: str
    device: str
    num_shard: int = 1
    """Tensor-parallel shards over all hosts."""


class EngineFailed(msgspec.Struct, frozen=True, tag="failed"):
    message: str


EngineOutput = StepOutputs | EngineReady | EngineFailed
