"""How one request wants its tokens chosen and when it stops: the value that travels from the
frontend through ipc to the engine and the sampler. A leaf: imports nothing from sluice."""

import msgspec


class SamplingParams(msgspec.Struct, frozen=True, omit_defaults=True):
    """Validated per-request generation settings (TGI's `parameters`, after defaults)."""

    max_new_tokens: int
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    """0 disables top-k."""
    top_p: float = 1.0
    """1.0 disables nucleus filtering."""
    seed: int | None = None
    """Seed of the request's own random generator; set whenever `do_sample` is true."""
    stop_token_ids: tuple[int, ...] = ()
    """Token ids that end generation with finish reason `eos_token`."""
    ignore_eos: bool = False
    """Benchmarks only: generate exactly `max_new_tokens` tokens."""

    @property
    def is_greedy(self) -> bool:
        return not self.do_sample
