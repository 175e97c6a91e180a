"""InputProcessor: TGI's validation rules, messages and order; truncation; length limits;
sampling defaults (warpers turn sampling on, sampling always has a seed)."""

from collections.abc import Callable

import pytest
from transformers import PreTrainedTokenizerBase

from sluice.config import ApiConfig, ServingLimits
from sluice.errors import ValidationError
from sluice.frontend.input_processor import GenerationParameters, InputProcessor
from sluice.sampling_params import Watermark

IM_END = 2  # the eos id given to the processor: every request's stop token


def _limits(max_input_tokens: int = 10, max_total_tokens: int = 20) -> ServingLimits:
    return ServingLimits(
        max_input_tokens=max_input_tokens,
        max_total_tokens=max_total_tokens,
        max_batch_prefill_tokens=4096,
        max_batch_total_tokens=max(max_total_tokens, 4096),
        block_size=16,
        num_kv_blocks=max(max_total_tokens, 4096) // 16,
    )


@pytest.fixture
def make_processor(tokenizer: PreTrainedTokenizerBase) -> Callable[..., InputProcessor]:
    def make(max_input_tokens: int = 10, max_total_tokens: int = 20) -> InputProcessor:
        return InputProcessor(tokenizer, _limits(max_input_tokens, max_total_tokens), (IM_END,))

    return make


def _words(tokenizer: PreTrainedTokenizerBase, n: int) -> str:
    """A prompt of exactly n tokens."""
    text = "hello" + " hello" * (n - 1)
    assert len(tokenizer(text)["input_ids"]) == n
    return text


def _reject(processor: InputProcessor, inputs: str, **params: object) -> str:
    with pytest.raises(ValidationError) as raised:
        processor.process(inputs, GenerationParameters(**params))  # type: ignore[arg-type]
    message = str(raised.value)
    prefix = "Input validation error: "
    assert message.startswith(prefix)
    return message.removeprefix(prefix)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"temperature": 0.0}, "`temperature` must be strictly positive"),
        ({"temperature": -1.0}, "`temperature` must be strictly positive"),
        ({"top_p": 0.0}, "`top_p` must be > 0.0 and < 1.0"),
        ({"top_p": 1.0}, "`top_p` must be > 0.0 and < 1.0"),
        ({"top_p": 1.5}, "`top_p` must be > 0.0 and < 1.0"),
        ({"top_k": 0}, "`top_k` must be strictly positive"),
        ({"top_k": -3}, "`top_k` must be strictly positive"),
        ({"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive"),
        # The first broken rule, in TGI's order, is the one reported.
        ({"temperature": 0.0, "top_p": 2.0}, "`temperature` must be strictly positive"),
        ({"top_p": 2.0, "top_k": 0}, "`top_p` must be > 0.0 and < 1.0"),
        ({"top_k": 0, "max_new_tokens": 0}, "`top_k` must be strictly positive"),
    ],
)
def test_input_processor_rejects_bad_parameters_with_tgi_messages(
    make_processor, params: dict[str, object], message: str
) -> None:
    assert _reject(make_processor(), "hello", **params) == message


def test_input_processor_checks_parameters_before_empty_inputs(make_processor) -> None:
    processor = make_processor()

    assert _reject(processor, "") == "`inputs` cannot be empty"
    assert _reject(processor, "", temperature=0.0) == "`temperature` must be strictly positive"


@pytest.mark.parametrize("truncate", [0, 11])
def test_input_processor_rejects_truncate_outside_max_input(make_processor, truncate: int) -> None:
    assert _reject(make_processor(max_input_tokens=10), "hello", truncate=truncate) == (
        f"`truncate` must be strictly positive and less than 10. Given: {truncate}"
    )


def test_input_processor_truncate_keeps_the_last_tokens(make_processor, tokenizer) -> None:
    text = "one two three four five six"
    full = tokenizer(text)["input_ids"]

    kept = make_processor(max_input_tokens=10).process(text, GenerationParameters(truncate=3))

    assert kept.prompt_token_ids == full[-3:]
    whole = make_processor(max_input_tokens=10).process(text, GenerationParameters(truncate=10))
    assert whole.prompt_token_ids == full


def test_input_processor_truncation_makes_a_long_prompt_valid(make_processor, tokenizer) -> None:
    validated = make_processor(max_input_tokens=10).process(
        _words(tokenizer, 15), GenerationParameters(truncate=4, max_new_tokens=2)
    )

    assert len(validated.prompt_token_ids) == 4


def test_input_processor_checks_total_length_before_input_length(make_processor, tokenizer) -> None:
    processor = make_processor(max_input_tokens=10, max_total_tokens=20)
    prompt = _words(tokenizer, 15)

    assert _reject(processor, prompt, max_new_tokens=10) == (
        "`inputs` tokens + `max_new_tokens` must be <= 20. "
        "Given: 15 `inputs` tokens and 10 `max_new_tokens`"
    )
    assert _reject(processor, prompt, max_new_tokens=5) == (
        "`inputs` must have less than 10 tokens. Given: 15"
    )


def test_input_processor_total_length_counts_at_most_1024_new_tokens(
    make_processor, tokenizer
) -> None:
    processor = make_processor(max_input_tokens=1000, max_total_tokens=1030)
    prompt = _words(tokenizer, 10)

    assert _reject(processor, prompt, max_new_tokens=4000) == (
        "`inputs` tokens + `max_new_tokens` must be <= 1030. "
        "Given: 10 `inputs` tokens and 1024 `max_new_tokens`"
    )
    # Contract 6.5: 100-token prompt, max_total 2048, 4000 new tokens is accepted.
    accepted = make_processor(max_input_tokens=1000, max_total_tokens=2048).process(
        _words(tokenizer, 100), GenerationParameters(max_new_tokens=4000)
    )
    assert accepted.sampling.max_new_tokens == 2048 - 100


def test_input_processor_unset_max_new_tokens_fills_to_max_total(make_processor, tokenizer) -> None:
    validated = make_processor(max_input_tokens=10, max_total_tokens=20).process(
        _words(tokenizer, 6), GenerationParameters()
    )

    assert validated.sampling.max_new_tokens == 14


def test_input_processor_keeps_a_fitting_max_new_tokens(make_processor, tokenizer) -> None:
    validated = make_processor().process(
        _words(tokenizer, 6), GenerationParameters(max_new_tokens=3)
    )

    assert validated.sampling.max_new_tokens == 3
    assert validated.prompt_token_ids == tokenizer(_words(tokenizer, 6))["input_ids"]


def test_input_processor_greedy_by_default_without_seed(make_processor) -> None:
    sampling = make_processor().process("hello", GenerationParameters(seed=42)).sampling

    assert (sampling.do_sample, sampling.seed) == (False, None)
    assert (sampling.temperature, sampling.top_k, sampling.top_p) == (1.0, 0, 1.0)
    assert sampling.stop_token_ids == (IM_END,)


@pytest.mark.parametrize(
    "params",
    [
        {"do_sample": True},
        {"temperature": 0.5},
        {"temperature": 1.5},
        {"top_k": 5},
        {"top_p": 0.9},
    ],
)
def test_input_processor_any_warper_turns_sampling_on_with_a_seed(
    make_processor, params: dict[str, object]
) -> None:
    processor = make_processor()

    first = processor.process("hello", GenerationParameters(**params)).sampling  # type: ignore[arg-type]
    second = processor.process("hello", GenerationParameters(**params)).sampling  # type: ignore[arg-type]

    assert first.do_sample and second.do_sample
    assert isinstance(first.seed, int) and isinstance(second.seed, int)
    assert first.seed != second.seed  # random 64-bit seeds


def test_input_processor_passes_ignore_eos_through(make_processor) -> None:
    sampling = make_processor().process("hello", GenerationParameters(ignore_eos=True)).sampling

    assert sampling.ignore_eos
    assert not make_processor().process("hello", GenerationParameters()).sampling.ignore_eos


@pytest.mark.parametrize("seed", [0, 42, 2**64 - 1])
def test_input_processor_keeps_the_given_seed(make_processor, seed: int) -> None:
    sampling = (
        make_processor()
        .process("hello", GenerationParameters(temperature=0.7, top_k=10, top_p=0.95, seed=seed))
        .sampling
    )

    assert (sampling.temperature, sampling.top_k, sampling.top_p) == (0.7, 10, 0.95)
    assert sampling.seed == seed


def test_input_processor_passes_penalties_typical_p_and_top_n_through(make_processor) -> None:
    params = GenerationParameters(
        repetition_penalty=1.3, frequency_penalty=-0.5, typical_p=0.4, top_n_tokens=3
    )

    sampling = make_processor().process("hello", params).sampling

    assert (sampling.repetition_penalty, sampling.frequency_penalty) == (1.3, -0.5)
    assert (sampling.typical_p, sampling.top_n_tokens) == (0.4, 3)
    assert sampling.do_sample and sampling.seed is not None  # typical_p is a warper
    plain = make_processor().process("hello", GenerationParameters()).sampling
    assert (plain.repetition_penalty, plain.frequency_penalty, plain.typical_p) == (1.0, 0.0, 1.0)
    assert (plain.top_n_tokens, plain.watermark, plain.prompt_logprobs) == (0, None, False)


def test_input_processor_penalties_alone_stay_greedy(make_processor) -> None:
    params = GenerationParameters(repetition_penalty=2.0, frequency_penalty=1.0, watermark=True)

    sampling = make_processor().process("hello", params).sampling

    assert (sampling.do_sample, sampling.seed) == (False, None)


def test_input_processor_watermark_and_prompt_logprobs_follow_the_server_flags(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    params = GenerationParameters(watermark=True, decoder_input_details=True)
    api = ApiConfig(watermark_gamma=0.3, watermark_delta=1.5, enable_prefill_logprobs=True)

    enabled = InputProcessor(tokenizer, _limits(), (IM_END,), api).process("hi", params).sampling
    default = InputProcessor(tokenizer, _limits(), (IM_END,)).process("hi", params).sampling

    assert enabled.watermark == Watermark(gamma=0.3, delta=1.5)
    assert enabled.prompt_logprobs
    assert default.watermark == Watermark(gamma=0.5, delta=2.0)
    assert not default.prompt_logprobs  # decoder_input_details needs --enable-prefill-logprobs
