"""Drafts from a smaller model that shares the target's tokenizer (`--speculator-model-id`).

The draft model keeps its own KV cache in the target's block layout: the same block ids and
slots, in tensors of its own shape, so one block manager serves both. It computes only for the
requests that draft in a step, so a step without drafts costs it nothing; draft_slots.py
records which slots hold its K/V. Within the step that verifies them, before the target's
forward pass, for each drafting request it
1. catches up: computes the request's tokens from the first position its cache lacks to the
   step's last known token (the scheduler hands drafting requests their earlier tokens);
2. proposes: takes its next token from the catch-up's last position, then feeds each draft
   back, one batched pass per draft, n tokens in all.
Greedy requests draft greedily; sampled ones sample from the draft's distribution with their
own warpers (temperature, top-k, top-p, typical-p), which rejection sampling then needs.
After verification, the draft's cache counts as valid up to the drafts the target kept."""

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from sluice.model.attention.backend import AttentionBackend
from sluice.model.forward import forward_pass
from sluice.model.sampling.sampler import apply_warpers
from sluice.model.step import RequestId, ScheduledRequest, StepPlan
from sluice.sampling_params import SamplingParams
from sluice.speculative.draft_cost import DraftCost
from sluice.speculative.draft_slots import DraftSlots

SEED_SALT = 0x5EED_D2AF
"""Mixed into a seeded request's seed for its draft generator: drafts must be drawn
independently of the target's verification draws, yet reproducibly."""


@dataclass(frozen=True, slots=True)
class _Proposal:
    token_ids: tuple[int, ...]
    probs: torch.Tensor | None
    """[num_drafts, vocab_size]: the distribution each draft was sampled from; None when the
    drafts were chosen greedily."""


@dataclass(frozen=True, slots=True)
class _Timings:
    """What a step's drafting took, in seconds."""

    passes_s: float
    num_passes: int
    """Passes of a token or two per drafting request."""
    catch_up_token_s: float | None
    """Per token of a longer catch-up, if the step had one."""


class DraftModel:
    def __init__(
        self,
        model: nn.Module,
        backend: AttentionBackend,
        kv_caches: Sequence[torch.Tensor],
        block_size: int,
        device: torch.device,
    ) -> None:
        self.model = model
        self.backend = backend
        self.kv_caches = list(kv_caches)
        self.block_size = block_size
        self.device = device
        self._slots = DraftSlots(block_size)
        self.cost = DraftCost()
        """What one of its passes costs relative to the target's step (draft_cost.py)."""
        self._timings: _Timings | None = None
        """The last step's, until the target's part of it is timed."""
        self._proposals: dict[RequestId, _Proposal] = {}
        self._generators: dict[RequestId, torch.Generator] = {}

    def propose(self, plan: StepPlan) -> StepPlan:
        """Return the plan with the drafts of every drafting request filled in, computing
        only for those requests."""
        drafting = [r for r in plan.requests if r.num_draft_tokens]
        for r in plan.requests:
            if not r.num_draft_tokens:  # the target writes slots the draft does not
                self._slots.cut(r.block_ids, r.num_computed_tokens)
        if not drafting:
            return plan
        started = time.perf_counter()
        catch_up = tuple(self._catch_up(r) for r in drafting)
        hidden = self._forward(catch_up)
        for r, computed in zip(drafting, catch_up, strict=True):
            known_end = r.num_computed_tokens + r.num_known_tokens
            self._slots.record(r.block_ids, computed.num_computed_tokens, known_end)
        num_tokens = sum(len(r.token_ids) for r in catch_up)
        ends = torch.tensor([len(r.token_ids) for r in catch_up]).cumsum(0)
        logits = self.model.compute_logits(hidden[(ends - 1).to(self.device)])
        if self.device.type == "cuda":  # the passes' timing must not include the catch-up
            torch.cuda.synchronize(self.device)
        caught_up = time.perf_counter()
        drafts, num_feeds = self._draft(drafting, logits)
        plan = replace(plan, requests=tuple(_filled(r, drafts) for r in plan.requests))
        finished = time.perf_counter()
        # Everything drafting costs counts, bookkeeping too. A catch-up of a token or two per
        # request is one more pass; a longer one is measured by its tokens.
        if num_tokens <= 2 * len(catch_up):
            self._timings = _Timings(finished - started, num_feeds + 1, None)
        else:
            self._timings = _Timings(
                finished - caught_up, num_feeds, (caught_up - started) / num_tokens
            )
        return plan

    def observe_target_step(self, step_s: float) -> None:
        """The target's part of the step just proposed for took `step_s` seconds."""
        timings, self._timings = self._timings, None
        if timings is not None:
            self.cost.observe(
                step_s,
                pass_s=timings.passes_s / timings.num_passes if timings.num_passes else None,
                catch_up_token_s=timings.catch_up_token_s,
            )

    def missing_tokens(self, block_ids: Sequence[int], end: int) -> int:
        """How many of a request's first `end` positions its next draft must catch up on."""
        return end - self._slots.valid_prefix(block_ids, end)

    def draft_probs(self, drafted: Sequence[ScheduledRequest]) -> torch.Tensor | None:
        """[num_draft_tokens, vocab_size]: the distribution of every draft of these requests,
        in order, for rejection sampling; None when all were chosen greedily (rows of greedy
        requests are zeros: their drafts are judged by the target's argmax alone)."""
        proposals = [self._proposals[r.request_id] for r in drafted]
        if all(p.probs is None for p in proposals):
            return None
        vocab_size = next(p.probs.shape[-1] for p in proposals if p.probs is not None)
        return torch.cat(
            [
                p.probs
                if p.probs is not None
                else torch.zeros(len(p.token_ids), vocab_size, device=self.device)
                for p in proposals
            ]
        )

    def settle(self, drafted: Sequence[ScheduledRequest], num_accepted: Sequence[int]) -> None:
        """After verification: the draft fed back all its drafts but the last, and those the
        target kept are the request's tokens now; the slots of the others are written over."""
        for r, accepted in zip(drafted, num_accepted, strict=True):
            known_end = r.num_computed_tokens + r.num_known_tokens
            kept_end = known_end + min(accepted, r.num_draft_tokens - 1)
            self._slots.record(r.block_ids, known_end, kept_end)

    def drop(self, request_ids: Sequence[RequestId]) -> None:
        for request_id in request_ids:
            self._proposals.pop(request_id, None)
            self._generators.pop(request_id, None)

    def _draft(
        self, drafting: Sequence[ScheduledRequest], logits: torch.Tensor
    ) -> tuple[dict[RequestId, list[int]], int]:
        """Choose each request's drafts, starting from the logits after its last known token
        and feeding each draft but the last back. Returns the drafts and the passes fed."""
        drafts: dict[RequestId, list[int]] = {r.request_id: [] for r in drafting}
        probs: dict[RequestId, list[torch.Tensor]] = {r.request_id: [] for r in drafting}
        active, num_feeds = list(drafting), 0
        for depth in range(max(r.num_draft_tokens for r in drafting)):
            tokens, rows = self._choose(active, logits)
            for r, token_id, row in zip(active, tokens, rows, strict=True):
                drafts[r.request_id].append(token_id)
                if row is not None:
                    probs[r.request_id].append(row)
            fed = [
                (r, d)
                for r, d in zip(active, tokens, strict=True)
                if r.num_draft_tokens > depth + 1
            ]
            if not fed:
                break
            active = [r for r, _ in fed]
            hidden = self._forward(tuple(self._feed(r, token_id, depth) for r, token_id in fed))
            logits = self.model.compute_logits(hidden)
            num_feeds += 1
        for r in drafting:
            rows = probs[r.request_id]
            self._proposals[r.request_id] = _Proposal(
                tuple(drafts[r.request_id]), torch.stack(rows) if rows else None
            )
        return drafts, num_feeds

    def _catch_up(self, request: ScheduledRequest) -> ScheduledRequest:
        """The tokens the draft computes for `request` before proposing: from the first
        position its cache lacks up to the request's last known token."""
        start = request.num_computed_tokens
        if len(request.context_token_ids) != start:
            raise ValueError(
                f"request {request.request_id} drafts from position {start} but brings "
                f"{len(request.context_token_ids)} earlier tokens"
            )
        valid = self._slots.valid_prefix(request.block_ids, start)
        return ScheduledRequest(
            request.request_id,
            request.context_token_ids[valid:] + request.token_ids[: request.num_known_tokens],
            valid,
            request.num_prompt_tokens,
            request.block_ids,
            None,
        )

    def _feed(self, request: ScheduledRequest, token_id: int, depth: int) -> ScheduledRequest:
        """The draft at `depth`, read back to propose the next one."""
        position = request.num_computed_tokens + request.num_known_tokens + depth
        return ScheduledRequest(
            request.request_id,
            (token_id,),
            position,
            request.num_prompt_tokens,
            request.block_ids,
            None,
        )

    def _choose(
        self, requests: Sequence[ScheduledRequest], logits: torch.Tensor
    ) -> tuple[list[int], list[torch.Tensor | None]]:
        """The next draft of each request, and the distribution it was sampled from (None
        for greedy requests)."""
        params = [_sampling(r) for r in requests]
        tokens = logits.argmax(dim=-1)
        rows: list[torch.Tensor | None] = [None] * len(requests)
        sampled = [i for i, p in enumerate(params) if not p.is_greedy]
        if sampled:
            index = torch.tensor(sampled, device=self.device)
            warped = apply_warpers(logits[index], [params[i] for i in sampled])
            probs = warped.softmax(dim=-1)
            for row, i in enumerate(sampled):
                noise = torch.empty_like(probs[row]).exponential_(
                    generator=self._generator_for(requests[i])
                )
                tokens[i] = (probs[row] / noise).argmax()
                rows[i] = probs[row]
        return tokens.tolist(), rows

    def _generator_for(self, request: ScheduledRequest) -> torch.Generator | None:
        seed = _sampling(request).seed
        if seed is None:
            return None
        generator = self._generators.get(request.request_id)
        if generator is None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(seed ^ SEED_SALT)
            self._generators[request.request_id] = generator
        return generator

    def _forward(self, requests: tuple[ScheduledRequest, ...]) -> torch.Tensor:
        return forward_pass(
            self.model, self.backend, self.kv_caches, self.block_size, requests, self.device
        )


def _sampling(request: ScheduledRequest) -> SamplingParams:
    if request.sampling is None:
        raise ValueError(f"request {request.request_id} drafts but does not sample this step")
    return request.sampling


def _filled(request: ScheduledRequest, drafts: dict[RequestId, list[int]]) -> ScheduledRequest:
    if not request.num_draft_tokens:
        return request
    known = request.token_ids[: request.num_known_tokens]
    return replace(request, token_ids=known + tuple(drafts[request.request_id]))
