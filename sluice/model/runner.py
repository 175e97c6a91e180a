"""Runs one step on this shard's device: flatten the plan into batch tensors, run the model
over the paged cache, compute logits only for sampling rows, and sample.

Holds the state that outlives a step on the device side: the KV cache tensors and each
sampling request's random generator."""

from collections.abc import Sequence

import torch
from torch import nn

from sluice.model.attention.backend import AttentionBackend, BatchLayout
from sluice.model.sampling.sampler import Sampler
from sluice.model.step import RequestId, RunnerOutput, SampledToken, ScheduledRequest, StepPlan


class ModelRunner:
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
        self.sampler = Sampler()
        self._generators: dict[RequestId, torch.Generator] = {}

    @torch.inference_mode()
    def execute(self, plan: StepPlan) -> RunnerOutput:
        for request_id in plan.finished_request_ids:
            self._generators.pop(request_id, None)
        if not plan.requests:
            return RunnerOutput(sampled=())
        requests = plan.requests
        hidden = self.forward(plan)
        sampling = [r for r in requests if r.sampling is not None]
        if not sampling:
            return RunnerOutput(sampled=())
        last_rows = torch.tensor([len(r.token_ids) for r in requests]).cumsum(0) - 1
        rows = [
            row
            for row, r in zip(last_rows.tolist(), requests, strict=True)
            if r.sampling is not None
        ]
        logits = self.model.compute_logits(hidden[torch.tensor(rows, device=self.device)])
        params = [r.sampling for r in sampling if r.sampling is not None]
        generators = [self._generator_for(r) for r in sampling]
        out = self.sampler(logits, params, generators)
        return RunnerOutput(
            sampled=tuple(
                SampledToken(r.request_id, token_id, logprob)
                for r, token_id, logprob in zip(
                    sampling, out.token_ids.tolist(), out.logprobs.tolist(), strict=True
                )
            )
        )

    def forward(self, plan: StepPlan) -> torch.Tensor:
        """Run the model over the plan's tokens. Returns hidden states [num_tokens, hidden]."""
        requests = plan.requests
        layout = BatchLayout(
            query_lens=[len(r.token_ids) for r in requests],
            num_computed_tokens=[r.num_computed_tokens for r in requests],
            block_tables=[list(r.block_ids) for r in requests],
            block_size=self.block_size,
        )
        token_ids, positions = self._flatten(requests)
        metadata = self.backend.build_metadata(layout, self.device)
        return self.model(token_ids, positions, self.kv_caches, metadata)

    def _flatten(self, requests: Sequence[ScheduledRequest]) -> tuple[torch.Tensor, torch.Tensor]:
        token_ids: list[int] = []
        positions: list[int] = []
        for r in requests:
            token_ids.extend(r.token_ids)
            start = r.num_computed_tokens
            positions.extend(range(start, start + len(r.token_ids)))
        return (
            torch.tensor(token_ids, dtype=torch.long, device=self.device),
            torch.tensor(positions, dtype=torch.long, device=self.device),
        )

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
