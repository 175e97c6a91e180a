"""Rank 0 sends each step's plan to the other shards, which rebuild it and run its forward pass.

The message is compact and typed (msgspec structs encoded as arrays): a request the shards have
not seen comes in full, a running one as what changed, its new tokens and the blocks appended
to its table since the last plan. Sampling settings, grammars and the drafts' sources stay on
rank 0: the other shards only need to know which rows get logits, to take part in the LM
head's collective. The bytes travel as two broadcasts (length, then payload) over the shards'
gloo group."""

import msgspec
import torch
import torch.distributed as dist

from sluice.distributed.parallel_context import collective
from sluice.model.step import RequestId, ScheduledRequest, StepPlan
from sluice.sampling_params import SamplingParams

SAMPLES = SamplingParams(max_new_tokens=1)
"""Stands for the sampling settings of a row that samples, on the shards that do not sample."""


class WireRequest(msgspec.Struct, array_like=True, frozen=True):
    request_id: str
    token_ids: list[int]
    num_computed_tokens: int
    num_prompt_tokens: int
    kept_blocks: int
    """Leading blocks of the request's table that the shards already hold from earlier plans."""
    new_blocks: list[int]
    """The rest of the table."""
    samples: bool
    wants_prompt_logprobs: bool
    num_draft_tokens: int


class WirePlan(msgspec.Struct, array_like=True, frozen=True):
    requests: list[WireRequest] = []
    finished: list[str] = []
    heartbeat: bool = False
    """Sent while rank 0 is idle: the shards answer with a barrier, so that a lost shard is
    noticed without a request."""
    stop: bool = False
    """Rank 0 is shutting down: the shards exit."""


class PlanEncoder:
    """Rank 0's side: remembers each running request's block table as the shards know it."""

    def __init__(self) -> None:
        self._tables: dict[RequestId, tuple[int, ...]] = {}

    def encode(self, plan: StepPlan) -> WirePlan:
        for request_id in plan.finished_request_ids:
            self._tables.pop(request_id, None)
        requests = []
        for r in plan.requests:
            known = self._tables.get(r.request_id, ())
            kept = len(known) if r.block_ids[: len(known)] == known else 0
            self._tables[r.request_id] = r.block_ids
            requests.append(
                WireRequest(
                    r.request_id,
                    list(r.token_ids),
                    r.num_computed_tokens,
                    r.num_prompt_tokens,
                    kept,
                    list(r.block_ids[kept:]),
                    r.sampling is not None,
                    r.wants_prompt_logprobs,
                    r.num_draft_tokens,
                )
            )
        return WirePlan(requests, list(plan.finished_request_ids))


class PlanDecoder:
    """The other shards' side: rebuilds each plan from the tables kept so far."""

    def __init__(self) -> None:
        self._tables: dict[RequestId, tuple[int, ...]] = {}

    def decode(self, wire: WirePlan) -> StepPlan:
        for request_id in wire.finished:
            self._tables.pop(request_id, None)
        requests = []
        for w in wire.requests:
            known = self._tables.get(w.request_id, ())
            if w.kept_blocks > len(known):
                raise ValueError(
                    f"plan out of step: request {w.request_id} keeps {w.kept_blocks} blocks, "
                    f"this shard holds {len(known)}"
                )
            table = known[: w.kept_blocks] + tuple(w.new_blocks)
            self._tables[w.request_id] = table
            requests.append(
                ScheduledRequest(
                    w.request_id,
                    tuple(w.token_ids),
                    w.num_computed_tokens,
                    w.num_prompt_tokens,
                    table,
                    SAMPLES if w.samples else None,
                    wants_prompt_logprobs=w.wants_prompt_logprobs,
                    num_draft_tokens=w.num_draft_tokens,
                )
            )
        return StepPlan(tuple(requests), tuple(wire.finished))


class PlanBroadcast:
    """Moves encoded plans from rank 0 to every shard over a gloo group."""

    def __init__(self, group: dist.ProcessGroup) -> None:
        self.group = group
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(WirePlan)

    def send(self, plan: WirePlan) -> None:
        payload = self._encoder.encode(plan)
        self._broadcast(torch.tensor([len(payload)], dtype=torch.int64))
        self._broadcast(torch.frombuffer(bytearray(payload), dtype=torch.uint8))

    def receive(self) -> WirePlan:
        length = torch.zeros(1, dtype=torch.int64)
        self._broadcast(length)
        payload = torch.empty(int(length.item()), dtype=torch.uint8)
        self._broadcast(payload)
        return self._decoder.decode(payload.numpy().tobytes())

    def barrier(self) -> None:
        with collective("a shard missed the heartbeat"):
            dist.barrier(group=self.group)

    def _broadcast(self, tensor: torch.Tensor) -> None:
        with collective("cannot pass the step plan"):
            dist.broadcast(tensor, src=0, group=self.group)
