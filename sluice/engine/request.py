"""A request's state inside the engine, and the state machine it moves through.

WAITING (queued, or preempted and queued again) -> RUNNING (scheduled each step until done)
-> FINISHED. A preempted request loses its KV blocks and recomputes prompt + output later."""

import enum
import time
from dataclasses import dataclass, field

from sluice.ipc.messages import FinishReason
from sluice.sampling_params import SamplingParams

RequestId = str


class RequestStatus(enum.Enum):
    WAITING = enum.auto()
    RUNNING = enum.auto()
    FINISHED = enum.auto()


@dataclass(slots=True)
class Request:
    request_id: RequestId
    prompt_token_ids: list[int]
    sampling: SamplingParams
    arrival_time: float = field(default_factory=time.monotonic)
    first_scheduled_time: float | None = None
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    """Tokens whose K/V are in the cache; catches up with `num_tokens` step by step."""
    block_ids: list[int] = field(default_factory=list)
    status: RequestStatus = RequestStatus.WAITING
    finish_reason: FinishReason | None = None
    num_preemptions: int = 0

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_uncomputed_tokens(self) -> int:
        return self.num_tokens - self.num_computed_tokens

    def token_ids_from(self, start: int, count: int) -> tuple[int, ...]:
        """`count` known tokens starting at position `start` (prompt, then output)."""
        prompt = self.prompt_token_ids
        tokens = prompt[start : start + count]
        if len(tokens) < count:
            first_output = max(0, start - len(prompt))
            tokens = (
                tokens + self.output_token_ids[first_output : first_output + count - len(tokens)]
            )
        return tuple(tokens)

    def check_finished(self) -> FinishReason | None:
        """Why the request must stop after its latest token, if it must (TGI's order)."""
        if len(self.output_token_ids) >= self.sampling.max_new_tokens:
            return FinishReason.LENGTH
        last = self.output_token_ids[-1]
        if not self.sampling.ignore_eos and last in self.sampling.stop_token_ids:
            return FinishReason.EOS_TOKEN
        return None
