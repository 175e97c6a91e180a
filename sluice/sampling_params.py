"""How one request wants its tokens chosen and when it stops: the value that travels from the
frontend through ipc to the engine and the sampler. A leaf: imports nothing from sluice."""

import msgspec


class Watermark(msgspec.Struct, frozen=True):
    """Kirchenbauer et al. watermark (arXiv:2301.10226): before choosing each token, add `delta`
    to the logits of a `gamma` share of the vocabulary, the green list, drawn from a generator
    seeded by the previous token."""

    gamma: float = 0.5
    delta: float = 2.0


class JsonSchemaGrammar(msgspec.Struct, frozen=True, tag="json_schema"):
    """Generated text must be JSON that follows this JSON Schema."""

    schema: str
    """The schema as JSON text (validated by the frontend)."""


class RegexGrammar(msgspec.Struct, frozen=True, tag="regex"):
    """Generated text must match this regular expression as a whole."""

    pattern: str


GrammarSpec = JsonSchemaGrammar | RegexGrammar
"""A grammar that constrains decoding: at each step only the tokens that keep the text a
prefix of a match may be chosen, and the request's stop tokens only once it matches whole."""


class SamplingParams(msgspec.Struct, frozen=True, omit_defaults=True):
    """Validated per-request generation settings (TGI's `parameters`, after defaults)."""

    max_new_tokens: int
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    """0 disables top-k."""
    top_p: float = 1.0
    """1.0 disables nucleus filtering."""
    typical_p: float = 1.0
    """Locally typical sampling mass; 1.0 disables it."""
    repetition_penalty: float = 1.0
    """CTRL-style penalty on every token already in the sequence; 1.0 disables it."""
    frequency_penalty: float = 0.0
    """Subtracts penalty x count(token) / sequence length; 0.0 disables it."""
    watermark: Watermark | None = None
    top_n_tokens: int = 0
    """Also return this many most likely alternatives at each generated position."""
    prompt_logprobs: bool = False
    """Return the logprob of every prompt token (TGI's `decoder_input_details`, when enabled)."""
    seed: int | None = None
    """Seed of the request's own random generator; set whenever `do_sample` is true."""
    stop_token_ids: tuple[int, ...] = ()
    """Token ids that end generation with finish reason `eos_token`."""
    ignore_eos: bool = False
    """Benchmarks only: generate exactly `max_new_tokens` tokens."""
    grammar: GrammarSpec | None = None
    """Constrains the generated tokens (TGI's `grammar`, after validation)."""

    @property
    def is_greedy(self) -> bool:
        return not self.do_sample

    @property
    def has_penalty(self) -> bool:
        """True when choosing a token needs the counts of every token in the sequence."""
        return self.repetition_penalty != 1.0 or self.frequency_penalty != 0.0

    @property
    def adjusts_logits(self) -> bool:
        """True when the logits change before warping: a penalty or a watermark."""
        return self.has_penalty or self.watermark is not None
