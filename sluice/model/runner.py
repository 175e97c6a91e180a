"""Runs one step on this shard's device: flatten the plan into batch tensors, run the model
over the paged cache, compute logits only for sampling rows (and the prompt positions of
requests that want prompt logprobs), and sample.

Holds the state that outlives a step on the device side: the KV cache tensors, each sampling
request's random generator, the token counts of requests with a penalty and the prompt
logprobs being collected. All of it is dropped when the plan lists the request as finished."""

import time
from collections.abc import Sequence
from concurrent.futures import Future

import torch
from torch import nn

from sluice.model.attention.backend import AttentionBackend
from sluice.model.forward import forward_pass
from sluice.model.prompt_logprobs import PromptLogprobs
from sluice.model.sampling.sampler import (
    Sampler,
    SamplerOutput,
    TokenHistory,
    TokenMasks,
    apply_warpers,
)
from sluice.model.sampling.token_counts import TokenCounts
from sluice.model.step import RequestId, RunnerOutput, SampledToken, ScheduledRequest, StepPlan
from sluice.speculative.draft_model import DraftModel
from sluice.speculative.rejection import verify_drafts


class ModelRunner:
    def __init__(
        self,
        model: nn.Module,
        backend: AttentionBackend,
        kv_caches: Sequence[torch.Tensor],
        block_size: int,
        device: torch.device,
        draft_model: DraftModel | None = None,
    ) -> None:
        self.model = model
        self.draft_model = draft_model
        """With `--speculator-model-id`: it fills in the drafts of each step's drafting
        requests before the forward pass."""
        self.backend = backend
        self.kv_caches = list(kv_caches)
        self.block_size = block_size
        self.device = device
        self.sampler = Sampler()
        self._generators: dict[RequestId, torch.Generator] = {}
        self._token_counts = TokenCounts(model.config.vocab_size, device)
        self._prompt_logprobs = PromptLogprobs()

    def execute(
        self, plan: StepPlan, token_masks: Future[TokenMasks] | None = None
    ) -> RunnerOutput:
        """Run the plan. `token_masks` brings the grammar masks of its sampling rows, computed
        elsewhere while the forward pass runs; the runner waits for them only to sample."""
        return self.run(self.prepare(plan), token_masks)

    @torch.inference_mode()
    def prepare(self, plan: StepPlan) -> StepPlan:
        """Drop the state of finished requests and, with a draft model, fill in the plan's
        drafts: the plan as the forward pass will run it, which the other shards receive."""
        if plan.finished_request_ids:
            self._drop(plan.finished_request_ids)
        if self.draft_model is None or not plan.requests:
            return plan
        return self.draft_model.propose(plan)

    @torch.inference_mode()
    def run(self, plan: StepPlan, token_masks: Future[TokenMasks] | None = None) -> RunnerOutput:
        """Run a prepared plan: forward, then sample or verify."""
        if not plan.requests:
            return RunnerOutput(sampled=())
        if self.draft_model is None:
            return self._run(plan, token_masks)
        started = time.perf_counter()
        output = self._run(plan, token_masks)
        self.draft_model.observe_target_step(time.perf_counter() - started)
        return output

    @torch.inference_mode()
    def follow(self, plan: StepPlan) -> None:
        """On a shard other than rank 0: run the plan's forward pass and the LM head on the
        rows rank 0 computes logits for, taking part in their collectives; rank 0 samples."""
        if plan.finished_request_ids:
            self._drop(plan.finished_request_ids)
        if not plan.requests:
            return
        hidden = self.forward(plan)
        if any(r.wants_prompt_logprobs for r in plan.requests):
            self._prompt_logprobs.compute(plan.requests, hidden, self.model.compute_logits)
        rows = _logit_rows(plan.requests)
        if rows:
            self.model.compute_logits(hidden[torch.tensor(rows, device=self.device)])

    def _run(self, plan: StepPlan, token_masks: Future[TokenMasks] | None) -> RunnerOutput:
        """The target's part of a step: forward, then sample or verify."""
        requests = plan.requests
        hidden = self.forward(plan)
        self._track(requests, hidden)
        sampling = [r for r in requests if r.sampling is not None]
        if not sampling:
            return RunnerOutput(sampled=())
        rows = _logit_rows(requests)
        logits = self.model.compute_logits(hidden[torch.tensor(rows, device=self.device)])
        masks = token_masks.result() if token_masks is not None else None
        if not any(r.num_draft_tokens for r in sampling):
            return RunnerOutput(sampled=self._sample(sampling, logits, masks))
        plain_rows, plain, drafted_rows, drafted = [], [], [], []
        plain_index: dict[int, int] = {}  # position among `sampling` -> among `plain`
        row = 0
        for position, r in enumerate(sampling):
            if r.num_draft_tokens:
                drafted_rows.extend(range(row, row + r.num_draft_tokens + 1))
                drafted.append(r)
            else:
                plain_index[position] = len(plain)
                plain_rows.append(row)
                plain.append(r)
            row += r.num_draft_tokens + 1
        sampled = self._verify(drafted, logits[torch.tensor(drafted_rows, device=self.device)])
        if plain:  # drafted requests have no grammar: every mask row is a plain request's
            plain_logits = logits[torch.tensor(plain_rows, device=self.device)]
            if masks is not None:
                masks = TokenMasks(tuple(plain_index[r] for r in masks.rows), masks.bitmask)
            sampled += self._sample(plain, plain_logits, masks)
        by_id = {token.request_id: token for token in sampled}
        return RunnerOutput(sampled=tuple(by_id[r.request_id] for r in sampling))

    def _sample(
        self,
        sampling: Sequence[ScheduledRequest],
        logits: torch.Tensor,
        masks: TokenMasks | None,
    ) -> tuple[SampledToken, ...]:
        """One token per request, from the logits of its last position."""
        params = [r.sampling for r in sampling if r.sampling is not None]
        generators = [self._generator_for(r) for r in sampling]
        marked = any(p.watermark is not None for p in params)
        out = self.sampler(
            logits,
            params,
            generators,
            history=self._history(sampling),
            previous_token_ids=[r.token_ids[-1] for r in sampling] if marked else (),
            allowed=masks,
        )
        return self._sampled_tokens(sampling, out)

    def _verify(
        self, drafted: Sequence[ScheduledRequest], logits: torch.Tensor
    ) -> tuple[SampledToken, ...]:
        """Accept or reject the drafts of each request from the logits of its draft positions
        and the one after them, against the draft model's distributions (n-gram drafts: a
        point mass each)."""
        params = [r.sampling for r in drafted if r.sampling is not None]
        num_rows = [r.num_draft_tokens + 1 for r in drafted]
        row_params = [p for p, n in zip(params, num_rows, strict=True) for _ in range(n)]
        warped = logits if all(p.is_greedy for p in params) else apply_warpers(logits, row_params)
        draft_model = self.draft_model
        verified = verify_drafts(
            warped,
            [r.token_ids[-r.num_draft_tokens :] for r in drafted],
            params,
            [self._generator_for(r) for r in drafted],
            draft_probs=draft_model.draft_probs(drafted) if draft_model is not None else None,
        )
        if draft_model is not None:
            draft_model.settle(drafted, verified.num_accepted)
        return tuple(
            SampledToken(
                r.request_id,
                token_ids[-1],
                logprobs[-1],
                accepted_token_ids=tuple(token_ids[:-1]),
                accepted_logprobs=tuple(logprobs[:-1]),
            )
            for r, token_ids, logprobs in zip(
                drafted, verified.token_ids, verified.logprobs, strict=True
            )
        )

    def forward(self, plan: StepPlan) -> torch.Tensor:
        """Run the model over the plan's tokens. Returns hidden states [num_tokens, hidden]."""
        return forward_pass(
            self.model, self.backend, self.kv_caches, self.block_size, plan.requests, self.device
        )

    def _track(self, requests: Sequence[ScheduledRequest], hidden: torch.Tensor) -> None:
        """Count the tokens of penalised requests and collect wanted prompt logprobs."""
        counting = [r for r in requests if r.counts_tokens]
        if counting:
            self._token_counts.observe(counting)
        if any(r.wants_prompt_logprobs for r in requests):
            self._prompt_logprobs.compute(requests, hidden, self.model.compute_logits)

    def _history(self, sampling: Sequence[ScheduledRequest]) -> TokenHistory | None:
        """Token counts of the sampling rows whose requests have a penalty, if any do."""
        penalised = [row for row, r in enumerate(sampling) if r.counts_tokens]
        if not penalised:
            return None
        return self._token_counts.history(
            penalised, [sampling[row].request_id for row in penalised]
        )

    def _sampled_tokens(
        self, sampling: Sequence[ScheduledRequest], out: SamplerOutput
    ) -> tuple[SampledToken, ...]:
        token_ids, logprobs = out.token_ids.tolist(), out.logprobs.tolist()
        top = out.top_tokens
        if top is None and not any(r.wants_prompt_logprobs for r in sampling):
            return tuple(
                SampledToken(r.request_id, token_id, logprob)
                for r, token_id, logprob in zip(sampling, token_ids, logprobs, strict=True)
            )
        sampled = []
        for row, request in enumerate(sampling):
            prompt_logprobs: tuple[float, ...] = ()
            if request.wants_prompt_logprobs:
                prompt_logprobs = self._prompt_logprobs.take(request.request_id)
            sampled.append(
                SampledToken(
                    request.request_id,
                    token_ids[row],
                    logprobs[row],
                    top_token_ids=tuple(top.token_ids[row]) if top else (),
                    top_logprobs=tuple(top.logprobs[row]) if top else (),
                    prompt_logprobs=prompt_logprobs,
                )
            )
        return tuple(sampled)

    def _drop(self, request_ids: Sequence[RequestId]) -> None:
        for request_id in request_ids:
            self._generators.pop(request_id, None)
        if self.draft_model is not None:
            self.draft_model.drop(request_ids)
        self._token_counts.drop(request_ids)
        self._prompt_logprobs.drop(request_ids)

    def _generator_for(self, request: ScheduledRequest) -> torch.Generator | None:
        sampling = request.sampling
        if sampling is None or sampling.is_greedy or sampling.seed is None:
            return None
        generator = self._generators.get(request.request_id)
        if generator is None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(sampling.seed)
            self._generators[request.request_id] = generator
        return generator


def _logit_rows(requests: Sequence[ScheduledRequest]) -> list[int]:
    """The rows of the step's hidden states that get logits: each sampling request's last
    position and, before it, one per draft it verifies."""
    ends = torch.tensor([len(r.token_ids) for r in requests]).cumsum(0).tolist()
    return [
        row
        for end, r in zip(ends, requests, strict=True)
        if r.sampling is not None
        for row in range(end - 1 - r.num_draft_tokens, end)
    ]
