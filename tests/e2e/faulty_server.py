"""`sluice` with a failure injected for tests: sampling any step that holds a request sampled
with FAULT_SEED raises once that request has generated FAULT_AFTER_TOKENS tokens. Sampling
runs on rank 0 after the forward pass, so with several shards the failure strikes after every
shard has run the step, as a real sampler failure would.

The patch is applied when this file runs as the main script, and in the engine process too:
multiprocessing's spawn start method re-imports the parent's main script there as
`__mp_main__`. Importing it from a test (for its constants) patches nothing."""

import sys
from collections.abc import Sequence

from sluice.model.runner import ModelRunner
from sluice.model.step import SampledToken, ScheduledRequest

FAULT_SEED = 424242
FAULT_AFTER_TOKENS = 3

_sample = ModelRunner._sample


def _sample_with_fault(
    self: ModelRunner, sampling: Sequence[ScheduledRequest], *args: object
) -> tuple[SampledToken, ...]:
    for request in sampling:
        generated = request.num_computed_tokens - request.num_prompt_tokens
        params = request.sampling
        if params is not None and params.seed == FAULT_SEED and generated >= FAULT_AFTER_TOKENS:
            raise RuntimeError("injected failure")
    return _sample(self, sampling, *args)  # type: ignore[arg-type]


if __name__ in ("__main__", "__mp_main__"):
    ModelRunner._sample = _sample_with_fault  # type: ignore[method-assign]

if __name__ == "__main__":
    from sluice.cli import main

    sys.exit(main())
