"""`sluice` with a failure injected for tests: any step holding a request sampled with
FAULT_SEED raises once that request has generated FAULT_AFTER_TOKENS tokens.

The patch is applied when this file runs as the main script, and in the engine process too:
multiprocessing's spawn start method re-imports the parent's main script there as
`__mp_main__`. Importing it from a test (for its constants) patches nothing."""

import sys

from sluice.model.runner import ModelRunner
from sluice.model.step import RunnerOutput, StepPlan

FAULT_SEED = 424242
FAULT_AFTER_TOKENS = 3

_execute = ModelRunner.execute


def _execute_with_fault(
    self: ModelRunner, plan: StepPlan, *args: object, **kwargs: object
) -> RunnerOutput:
    for request in plan.requests:
        generated = request.num_computed_tokens - request.num_prompt_tokens
        sampling = request.sampling
        if sampling is not None and sampling.seed == FAULT_SEED and generated >= FAULT_AFTER_TOKENS:
            raise RuntimeError("injected failure")
    return _execute(self, plan, *args, **kwargs)


if __name__ in ("__main__", "__mp_main__"):
    ModelRunner.execute = _execute_with_fault  # type: ignore[method-assign]

if __name__ == "__main__":
    from sluice.cli import main

    sys.exit(main())
