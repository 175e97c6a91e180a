"""The engine core's busy loop: receive requests, schedule a step, run it, send its outputs.

Runs in its own process so that the model never waits on HTTP work and streaming never waits
on the model. When a step raises, its requests are run again one by one, so that only the
request that fails again ends with an error; the others and the loop carry on. A lost shard
(`ShardLost`) is not retried: it ends the engine. Requests with a grammar get their token
masks computed beside each step's forward pass (engine/grammar.py)."""

import logging
import os
import time
from concurrent.futures import Future, wait

from sluice.distributed.parallel_context import ShardLost
from sluice.engine.executor import Executor
from sluice.engine.grammar import GrammarMatchers
from sluice.engine.request import Request
from sluice.engine.scheduler import Scheduler
from sluice.ipc.messages import (
    AbortRequests,
    AddRequest,
    EngineInput,
    RequestOutput,
    StepOutputs,
    StepStats,
)
from sluice.ipc.transport import EngineChannel
from sluice.model.sampling.sampler import TokenMasks
from sluice.model.step import RequestId, RunnerOutput, SampledToken, ScheduledRequest, StepPlan

logger = logging.getLogger(__name__)

IDLE_POLL_MS = 500


class EngineCore:
    def __init__(
        self,
        scheduler: Scheduler,
        executor: Executor,
        channel: EngineChannel,
        grammars: GrammarMatchers | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.executor = executor
        self.channel = channel
        self.grammars = grammars
        """None when grammar support is off: a request with a grammar then fails."""
        self.num_steps = 0
        self._stop_requested = False
        self._refused: list[RequestOutput] = []
        """Requests ended before scheduling (a grammar that did not compile), sent next step."""

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work or bool(self._refused)

    def run_forever(self) -> None:
        """Serve until the API process (our parent) goes away or a stop is requested."""
        parent_pid = os.getppid()
        while os.getppid() == parent_pid and not self._stop_requested:
            timeout = 0 if self.has_work else IDLE_POLL_MS
            for message in self.channel.receive(timeout):
                self.handle(message)
            if self.has_work:
                self.channel.send(self.step())
            else:
                self.executor.keep_alive()
        logger.info(
            "engine exits: %s", "stop requested" if self._stop_requested else "API process is gone"
        )
        self.executor.stop()

    def request_stop(self) -> None:
        """Stop after the step under way (safe to call from a signal handler)."""
        self._stop_requested = True

    def handle(self, message: EngineInput) -> None:
        match message:
            case AddRequest(request_id=request_id, prompt_token_ids=ids, sampling=sampling):
                error = self._constrain(message)
                if error is not None:
                    self._refused.append(RequestOutput(request_id, [], [], error=error))
                    return
                self.scheduler.add_request(Request(request_id, list(ids), sampling))
            case AbortRequests(request_ids=request_ids):
                self.scheduler.abort(request_ids)

    def step(self) -> StepOutputs:
        started = time.perf_counter()
        plan = self.scheduler.schedule()
        ran, output, errors = self._execute_isolating_failures(plan)
        outputs, self._refused = self._refused, []
        outputs += [self.scheduler.fail(request_id, error) for request_id, error in errors.items()]
        outputs += self.scheduler.update(ran, output)
        if self.grammars is not None:
            refused = self.grammars.advance(output.sampled)
            outputs += [self.scheduler.fail(request_id, e) for request_id, e in refused.items()]
            self.grammars.drop(o.request_id for o in outputs if o.finish_reason or o.error)
        stats = self._stats(
            plan, ran, output, time.perf_counter() - started, num_failed=len(errors)
        )
        self.num_steps += 1
        return StepOutputs(outputs=outputs, stats=stats)

    def _execute_isolating_failures(
        self, plan: StepPlan
    ) -> tuple[StepPlan, RunnerOutput, dict[RequestId, str]]:
        """Run the plan; if it raises, run each request alone. Returns the part of the plan
        that ran, its output, and an error message per request that failed on its own."""
        masks = self._masks(plan)
        try:
            return plan, self.executor.execute(plan, masks), {}
        except ShardLost:
            raise
        except Exception:
            logger.exception("step %d failed; running its requests one by one", self.num_steps)
        if masks is not None:
            wait([masks])  # the matchers are the worker's until it is done with them
        ran: list[ScheduledRequest] = []
        sampled: list[SampledToken] = []
        errors: dict[RequestId, str] = {}
        for request in plan.requests:
            try:
                alone = StepPlan((request,))
                output = self.executor.execute(alone, self._masks(alone))
            except ShardLost:
                raise
            except Exception as error:  # this request fails; the step's others carry on
                logger.exception("request %s failed", request.request_id)
                errors[request.request_id] = f"{type(error).__name__}: {error}"
                continue
            ran.append(request)
            sampled.extend(output.sampled)
        return StepPlan(tuple(ran)), RunnerOutput(tuple(sampled)), errors

    def _constrain(self, message: AddRequest) -> str | None:
        """Build the matcher of a request with a grammar; returns why it cannot be built."""
        if message.sampling.grammar is None:
            return None
        if self.grammars is None:
            return "grammar is not supported"
        error = self.grammars.add(message.request_id, message.sampling)
        return None if error is None else f"grammar is not valid: {error}"

    def _masks(self, plan: StepPlan) -> Future[TokenMasks] | None:
        """Start computing the grammar masks of the plan's sampling rows, if any has one."""
        if self.grammars is None:
            return None
        self.grammars.drop(plan.finished_request_ids)  # aborted ones
        return self.grammars.masks_in_background(plan)

    def _stats(
        self,
        plan: StepPlan,
        ran: StepPlan,
        output: RunnerOutput,
        duration_s: float,
        *,
        num_failed: int,
    ) -> StepStats:
        prompt_tokens = plan.num_prompt_tokens
        kv_cache = self.scheduler.kv_cache
        drafted = {r.request_id for r in ran.requests if r.num_draft_tokens}
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
            block_size=kv_cache.block_size,
            num_failed_requests=num_failed,
            num_preemptions=self.scheduler.num_preemptions,
            prefix_cache_queried_tokens=kv_cache.stats.queried_tokens,
            prefix_cache_hit_tokens=kv_cache.stats.hit_tokens,
            num_draft_tokens=sum(r.num_draft_tokens for r in ran.requests),
            accepted_drafts=[
                len(t.accepted_token_ids) for t in output.sampled if t.request_id in drafted
            ],
        )
