"""Validates a generation request against the serving limits and tokenizes it.

Rules and messages are TGI's (contract section 2.3), checked in TGI's order so that the first
broken rule is the one reported. Every route (native, chat, completions) goes through here."""

import secrets
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from sluice.config import ApiConfig, ServingLimits
from sluice.errors import ValidationError
from sluice.frontend.grammar import Grammar, grammar_spec
from sluice.sampling_params import GrammarSpec, SamplingParams, Watermark

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
    typical_p: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    truncate: int | None = None
    return_full_text: bool | None = None
    details: bool = False
    decoder_input_details: bool = False
    top_n_tokens: int | None = None
    best_of: int | None = None
    watermark: bool = False
    add_special_tokens: bool = True
    """False for chat: the template already holds the special tokens."""
    ignore_eos: bool = False
    """sluice extension for benchmarks."""
    grammar: Grammar | None = None
    """Constrain the output (TGI's `grammar`; chat's `response_format` and tools map onto it)."""


@dataclass(frozen=True, slots=True)
class ValidatedRequest:
    prompt_token_ids: list[int]
    sampling: SamplingParams
    """`seed` is set whenever the request samples."""
    stop: tuple[str, ...] = ()
    """Stop strings, matched by the frontend on the generated text."""


class InputProcessor:
    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        limits: ServingLimits,
        eos_token_ids: tuple[int, ...],
        api: ApiConfig | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.limits = limits
        self.eos_token_ids = eos_token_ids
        self.api = api or ApiConfig()

    def process(self, inputs: str, params: GenerationParameters) -> ValidatedRequest:
        self._check_parameters(params)
        if inputs == "":
            raise ValidationError("`inputs` cannot be empty")
        max_input = self.limits.max_input_tokens
        if params.truncate is not None and not 0 < params.truncate <= max_input:
            raise ValidationError(
                "`truncate` must be strictly positive and less than "
                f"{max_input}. Given: {params.truncate}"
            )
        token_ids = self.tokenize(inputs, add_special_tokens=params.add_special_tokens)
        if params.truncate is not None:
            token_ids = token_ids[-params.truncate :]
        max_new_tokens = self._check_lengths(len(token_ids), params.max_new_tokens)
        grammar = self._check_grammar(params.grammar)
        return ValidatedRequest(
            token_ids, self._sampling(params, max_new_tokens, grammar), stop=tuple(params.stop)
        )

    def tokenize(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        try:
            encoded = self.tokenizer(text, add_special_tokens=add_special_tokens)
        except Exception as error:  # the tokenizer's own failure becomes TGI's rule 14
            raise ValidationError(f"tokenizer error {error}") from error
        return list(encoded["input_ids"])

    def _check_parameters(self, params: GenerationParameters) -> None:
        """Rules 1-11 of TGI's validation, in TGI's order."""
        best_of = params.best_of or 1
        if best_of > 1 and not _asks_for_sampling(params):
            raise ValidationError("you must use sampling when `best_of` is > 1")
        _check_ranges(params)
        if len(params.stop) > self.api.max_stop_sequences:
            raise ValidationError(
                f"`stop` supports up to {self.api.max_stop_sequences} stop sequences. "
                f"Given: {len(params.stop)}"
            )
        if params.seed is not None and best_of > 1:
            raise ValidationError("`seed` must not be set when `best_of` > 1")
        top_n = params.top_n_tokens or 0
        if top_n > self.api.max_top_n_tokens:
            raise ValidationError(
                f"`top_n_tokens` must be >= 0 and <= {self.api.max_top_n_tokens}. Given: {top_n}"
            )

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

    def _check_grammar(self, grammar: Grammar | None) -> GrammarSpec | None:
        """Rule 17."""
        if grammar is None:
            return None
        if self.api.disable_grammar_support:
            raise ValidationError("grammar is not supported")
        return grammar_spec(grammar)

    def _sampling(
        self, params: GenerationParameters, max_new_tokens: int, grammar: GrammarSpec | None
    ) -> SamplingParams:
        temperature = params.temperature if params.temperature is not None else 1.0
        top_k = params.top_k or 0
        top_p = params.top_p if params.top_p is not None else 1.0
        do_sample = params.do_sample or _has_warper(params)
        seed = None
        if do_sample:
            seed = params.seed if params.seed is not None else secrets.randbits(64)
        api = self.api
        return SamplingParams(
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            typical_p=_or_default(params.typical_p, 1.0),
            repetition_penalty=_or_default(params.repetition_penalty, 1.0),
            frequency_penalty=_or_default(params.frequency_penalty, 0.0),
            watermark=Watermark(api.watermark_gamma, api.watermark_delta)
            if params.watermark
            else None,
            top_n_tokens=params.top_n_tokens or 0,
            prompt_logprobs=params.decoder_input_details and api.enable_prefill_logprobs,
            seed=seed,
            stop_token_ids=self.eos_token_ids,
            ignore_eos=params.ignore_eos,
            grammar=grammar,
        )


def _or_default(value: float | None, default: float) -> float:
    return value if value is not None else default


def _asks_for_sampling(params: GenerationParameters) -> bool:
    """TGI's rule 1 counts any warper parameter that is merely set as a sampling signal."""
    warpers = (params.temperature, params.top_k, params.top_p, params.typical_p)
    return params.do_sample or any(value is not None for value in warpers)


def _has_warper(params: GenerationParameters) -> bool:
    """Any active warper turns sampling on, as in TGI."""
    return (
        (params.temperature is not None and params.temperature != 1.0)
        or (params.top_k or 0) > 0
        or (params.top_p is not None and params.top_p < 1.0)
        or (params.typical_p is not None and params.typical_p < 1.0)
    )


def _check_ranges(params: GenerationParameters) -> None:
    """Rules 2-8."""
    if params.temperature is not None and params.temperature <= 0:
        raise ValidationError("`temperature` must be strictly positive")
    if params.repetition_penalty is not None and params.repetition_penalty <= 0:
        raise ValidationError("`repetition_penalty` must be strictly positive")
    if params.frequency_penalty is not None and not -2.0 <= params.frequency_penalty <= 2.0:
        raise ValidationError("`frequency_penalty` must be >= -2.0 and <= 2.0")
    if params.top_p is not None and not 0.0 < params.top_p < 1.0:
        raise ValidationError("`top_p` must be > 0.0 and < 1.0")
    if params.typical_p is not None and not 0.0 < params.typical_p < 1.0:
        raise ValidationError("`typical_p` must be > 0.0 and < 1.0")
    if params.top_k is not None and params.top_k <= 0:
        raise ValidationError("`top_k` must be strictly positive")
    if params.max_new_tokens is not None and params.max_new_tokens <= 0:
        raise ValidationError("`max_new_tokens` must be strictly positive")
