"""Validates a generation request against the serving limits and tokenizes it.

Rules and messages are TGI's (contract section 2.3), checked in TGI's order so that the first
broken rule is the one reported."""

import secrets
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from sluice.config import ServingLimits
from sluice.errors import ValidationError
from sluice.sampling_params import SamplingParams

MAX_NEW_TOKENS_PER_PASS = 1024
"""TGI validates (and schedules) at most this many new tokens per pass; see contract 6.5."""


@dataclass(frozen=True, slots=True)
class GenerationParameters:
    """TGI's `parameters` object as received; None means the client left it out."""

    do_sample: bool = False
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    truncate: int | None = None
    return_full_text: bool | None = None
    details: bool = False
    decoder_input_details: bool = False
    ignore_eos: bool = False


@dataclass(frozen=True, slots=True)
class ValidatedRequest:
    prompt_token_ids: list[int]
    sampling: SamplingParams
    """`seed` is set whenever the request samples."""


class InputProcessor:
    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        limits: ServingLimits,
        eos_token_ids: tuple[int, ...],
    ) -> None:
        self.tokenizer = tokenizer
        self.limits = limits
        self.eos_token_ids = eos_token_ids

    def process(self, inputs: str, params: GenerationParameters) -> ValidatedRequest:
        _check_parameters(params)
        if inputs == "":
            raise ValidationError("`inputs` cannot be empty")
        max_input = self.limits.max_input_tokens
        if params.truncate is not None and not 0 < params.truncate <= max_input:
            raise ValidationError(
                "`truncate` must be strictly positive and less than "
                f"{max_input}. Given: {params.truncate}"
            )
        token_ids = self.tokenizer(inputs, add_special_tokens=True)["input_ids"]
        if params.truncate is not None:
            token_ids = token_ids[-params.truncate :]
        max_new_tokens = self._check_lengths(len(token_ids), params.max_new_tokens)
        return ValidatedRequest(token_ids, self._sampling(params, max_new_tokens))

    def _check_lengths(self, input_length: int, requested: int | None) -> int:
        """Rules 15 and 16; returns how many tokens the request may generate."""
        max_total = self.limits.max_total_tokens
        room = max(max_total - input_length, 0)
        checked = min(requested if requested is not None else room, MAX_NEW_TOKENS_PER_PASS)
        if input_length + checked > max_total:
            raise ValidationError(
                f"`inputs` tokens + `max_new_tokens` must be <= {max_total}. "
                f"Given: {input_length} `inputs` tokens and {checked} `max_new_tokens`"
            )
        if input_length > self.limits.max_input_tokens:
            raise ValidationError(
                f"`inputs` must have less than {self.limits.max_input_tokens} tokens. "
                f"Given: {input_length}"
            )
        return min(requested, room) if requested is not None else room

    def _sampling(self, params: GenerationParameters, max_new_tokens: int) -> SamplingParams:
        temperature = params.temperature if params.temperature is not None else 1.0
        top_k = params.top_k or 0
        top_p = params.top_p if params.top_p is not None else 1.0
        # Any active warper turns sampling on, as in TGI.
        do_sample = params.do_sample or temperature != 1.0 or top_k > 0 or top_p < 1.0
        seed = None
        if do_sample:
            seed = params.seed if params.seed is not None else secrets.randbits(64)
        return SamplingParams(
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            stop_token_ids=self.eos_token_ids,
            ignore_eos=params.ignore_eos,
        )


def _check_parameters(params: GenerationParameters) -> None:
    """Rules 2-11 of TGI's validation, for the parameters sluice handles."""
    if params.temperature is not None and params.temperature <= 0:
        raise ValidationError("`temperature` must be strictly positive")
    if params.top_p is not None and not 0.0 < params.top_p < 1.0:
        raise ValidationError("`top_p` must be > 0.0 and < 1.0")
    if params.top_k is not None and params.top_k <= 0:
        raise ValidationError("`top_k` must be strictly positive")
    if params.max_new_tokens is not None and params.max_new_tokens <= 0:
        raise ValidationError("`max_new_tokens` must be strictly positive")
