"""Request and response bodies of the native TGI routes, with TGI's field names and defaults.

pydantic validates untrusted JSON here and gives the OpenAPI schema; nothing below `api/`
sees these models."""

from typing import Any, Literal

from pydantic import BaseModel, Field


class GrammarParameter(BaseModel):
    """TGI's grammar: `json` (alias `json_object`) with a JSON Schema object or a string of one,
    `json_schema` with `{"name"?: str, "schema": {...}}`, or `regex` with a regex string."""

    type: Literal["json", "json_object", "json_schema", "regex"]
    value: Any


class GenerateParameters(BaseModel):
    best_of: int | None = Field(None, ge=0)
    decoder_input_details: bool = False
    details: bool = False
    do_sample: bool = False
    frequency_penalty: float | None = None
    grammar: GrammarParameter | None = None
    max_new_tokens: int | None = Field(None, ge=0, lt=2**32)
    repetition_penalty: float | None = None
    return_full_text: bool | None = None
    seed: int | None = Field(None, ge=0, lt=2**64)
    stop: list[str] = Field(default_factory=list)
    temperature: float | None = None
    top_k: int | None = None
    top_n_tokens: int | None = Field(None, ge=0)
    top_p: float | None = None
    truncate: int | None = Field(None, ge=0)
    typical_p: float | None = None
    watermark: bool = False
    adapter_id: str | None = None
    ignore_eos: bool = Field(
        False, description="sluice extension for benchmarks: generate max_new_tokens, EOS or not"
    )


DEFAULT_PARAMETERS = GenerateParameters(do_sample=True)
"""TGI's quirk: with the whole `parameters` object absent, sampling is on."""


class GenerateRequest(BaseModel):
    inputs: str
    parameters: GenerateParameters = Field(default_factory=lambda: DEFAULT_PARAMETERS)
    stream: bool = False


class Token(BaseModel):
    id: int
    text: str
    logprob: float | None
    special: bool


class PrefillToken(BaseModel):
    id: int
    text: str
    logprob: float | None


FinishReasonName = Literal["length", "eos_token", "stop_sequence"]


class BestOfSequence(BaseModel):
    generated_text: str
    finish_reason: FinishReasonName
    generated_tokens: int
    seed: int | None
    prefill: list[PrefillToken]
    tokens: list[Token]
    top_tokens: list[list[Token]] | None = Field(None, description="omitted when empty")


class Details(BaseModel):
    finish_reason: FinishReasonName
    generated_tokens: int
    seed: int | None
    prefill: list[PrefillToken]
    tokens: list[Token]
    top_tokens: list[list[Token]] | None = Field(None, description="omitted when empty")
    best_of_sequences: list[BestOfSequence] | None = Field(
        None, description="the other sequences of best_of; omitted unless best_of > 1"
    )


class GenerateResponse(BaseModel):
    generated_text: str
    details: Details | None = None


class StreamDetails(BaseModel):
    finish_reason: FinishReasonName
    generated_tokens: int
    seed: int | None
    input_length: int


class StreamResponse(BaseModel):
    index: int
    token: Token
    top_tokens: list[Token] | None = Field(None, description="only when top_n_tokens > 0")
    generated_text: str | None
    details: StreamDetails | None


class ErrorResponse(BaseModel):
    error: str
    error_type: str


class Info(BaseModel):
    model_id: str
    model_sha: str | None
    model_pipeline_tag: str | None
    model_dtype: str
    model_device_type: str
    max_concurrent_requests: int
    max_best_of: int
    max_stop_sequences: int
    max_input_tokens: int
    max_total_tokens: int
    max_batch_total_tokens: int
    validation_workers: int
    max_client_batch_size: int
    router: str
    version: str
    sha: str | None
    docker_label: str | None
    num_shard: int
    """sluice's extra: tensor-parallel shards over all hosts (TGI reports them only in
    x-compute-type)."""
