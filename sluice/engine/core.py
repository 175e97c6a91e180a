"""The engine core's busy loop: receive requests, schedule a step, run it, send its outputs.

Runs in its own process so that the model never waits on HTTP work and streaming never waits
on the model. A step that raises fails only the requests in it; the loop carries on."""

import logging
import os
import time

from sluice.engine.request import Request
from sluice.engine.scheduler import Scheduler
from sluice.ipc.messages import AbortRequests, AddRequest, EngineInput, StepOutputs, StepStats
from sluice.ipc.transport import EngineChannel
from sluice.model.runner import ModelRunner
from sluice.model.step import StepPlan

logger = logging.getLogger(__name__)

IDLE_POLL_MS = 500


class EngineCore:
    def __init__(self, scheduler: Scheduler, runner: ModelRunner, channel: EngineChannel) -> None:
        self.scheduler = scheduler
        self.runner = runner
        self.channel = channel
        self.num_steps = 0

    def run_forever(self) -> None:
        """Serve until the API process (our parent) goes away."""
        parent_pid = os.getppid()
        while os.getppid() == parent_pid:
            timeout = 0 if self.scheduler.has_work else IDLE_POLL_MS
            for message in self.channel.receive(timeout):
                self.handle(message)
            if self.scheduler.has_work:
                self.channel.send(self.step())
        logger.info("API process is gone; engine exits")

    def handle(self, message: EngineInput) -> None:
        match message:
            case AddRequest(request_id=request_id, prompt_token_ids=ids, sampling=sampling):
                self.scheduler.add_request(Request(request_id, list(ids), sampling))
            case AbortRequests(request_ids=request_ids):
                self.scheduler.abort(request_ids)

    def step(self) -> StepOutputs:
        started = time.perf_counter()
        plan = self.scheduler.schedule()
        try:
            outputs = self.scheduler.update(plan, self.runner.execute(plan))
        except Exception as error:  # a failed step must not take the other requests down
            logger.exception("step %d failed", self.num_steps)
            outputs = self.scheduler.fail(plan, f"{type(error).__name__}: {error}")
        stats = self._stats(plan, time.perf_counter() - started)
        self.num_steps += 1
        return StepOutputs(outputs=outputs, stats=stats)

    def _stats(self, plan: StepPlan, duration_s: float) -> StepStats:
        prompt_tokens = plan.num_prompt_tokens
        kv_cache = self.scheduler.kv_cache
        return StepStats(
            step_index=self.num_steps,
            num_requests=len(plan.requests),
            num_prefill_tokens=prompt_tokens,
            num_decode_tokens=plan.num_tokens - prompt_tokens,
            duration_s=duration_s,
            num_waiting=len(self.scheduler.waiting),
            num_running=len(self.scheduler.running),
            num_free_blocks=kv_cache.num_free_blocks,
            num_blocks=kv_cache.num_blocks,
        )
