"""How the engine core runs a step: in this process alone, or on every shard.

With one shard the model runner is all there is. With several, rank 0's runner prepares the
plan (drafts filled in), the plan goes to the other shards (engine/plan_broadcast.py), and
every shard runs the forward pass, whose collectives keep them in step; rank 0 samples."""

import contextlib
from concurrent.futures import Future
from typing import Protocol

from sluice.distributed.parallel_context import ShardLost
from sluice.engine.plan_broadcast import PlanBroadcast, PlanEncoder, WirePlan
from sluice.model.runner import ModelRunner
from sluice.model.sampling.sampler import TokenMasks
from sluice.model.step import RunnerOutput, StepPlan


class StepRunner(Protocol):
    def execute(
        self, plan: StepPlan, token_masks: Future[TokenMasks] | None = None
    ) -> RunnerOutput: ...


class Executor(Protocol):
    def execute(
        self, plan: StepPlan, token_masks: Future[TokenMasks] | None = None
    ) -> RunnerOutput: ...

    def keep_alive(self) -> None:
        """Called while there is no work, about twice a second."""

    def stop(self) -> None:
        """The engine is shutting down."""


class LocalExecutor:
    """One shard: the runner runs the step."""

    def __init__(self, runner: StepRunner) -> None:
        self.runner = runner

    def execute(
        self, plan: StepPlan, token_masks: Future[TokenMasks] | None = None
    ) -> RunnerOutput:
        return self.runner.execute(plan, token_masks)

    def keep_alive(self) -> None:
        pass

    def stop(self) -> None:
        pass


class ShardedExecutor:
    """Rank 0 of several shards. A failed collective raises `ShardLost`, which the engine core
    does not retry. Other failures of a step are retried request by request, each retry a plan
    of its own that every shard runs: a failure that strikes every shard alike (a shape the
    model cannot run) keeps them in step; one that strikes a shard alone breaks the lockstep,
    and the next collective fails or times out."""

    def __init__(self, runner: ModelRunner, broadcast: PlanBroadcast) -> None:
        self.runner = runner
        self.broadcast = broadcast
        self._encoder = PlanEncoder()

    def execute(
        self, plan: StepPlan, token_masks: Future[TokenMasks] | None = None
    ) -> RunnerOutput:
        prepared = self.runner.prepare(plan)
        self.broadcast.send(self._encoder.encode(prepared))
        return self.runner.run(prepared, token_masks)

    def keep_alive(self) -> None:
        """A heartbeat the shards answer, so that a shard or host that went away is noticed
        while the server is idle, within the collective timeout."""
        self.broadcast.send(WirePlan(heartbeat=True))
        self.broadcast.barrier()

    def stop(self) -> None:
        with contextlib.suppress(ShardLost):  # they are gone already
            self.broadcast.send(WirePlan(stop=True))
