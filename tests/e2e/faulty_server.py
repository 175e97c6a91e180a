"""`sluice` with a failure injected for tests: any step holding a request sampled with
FAULT_SEED raises once that request has generated FAULT_AFTER_TOKENS tokens.

The patch sits at module level so that it also runs in the engine process: multiprocessing's
spawn start method re-imports the parent's main script there."""

import sys

from sluice.model.runner import ModelRunner
from sluice.model.step import RunnerOutput, StepPlan

FAULT_SEED = 424242
FAULT_AFTER_TOKENS = 3

_execute = ModelRunner.execute


def _execute_with_fault(self: ModelRunner, plan: StepPlan) -> RunnerOutput:
    for request in plan.requests:
        generated = request.num_computed_tokens - request.num_prompt_tokens
        sampling = request.sampling
        if sampling is not None and sampling.seed == FAULT_SEED and generated >= FAULT_AFTER_TOKENS:
            raise RuntimeError("injected failure")
    return _execute(self, plan)


ModelRunner.execute = _execute_with_fault  # type: ignore[method-assign]

if __name__ == "__main__":
    from sluice.cli import main

    sys.exit(main())
