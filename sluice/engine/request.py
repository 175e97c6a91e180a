"""A request's state inside the engine, and the state machine it moves through.

WAITING (queued, or preempted and queued again) -> RUNNING (scheduled each step until done)
-> FINISHED. A preempted request loses its KV blocks and recomputes prompt + output later,
except for what the prefix cache still holds."""

import enum
import time
from dataclasses import dataclass, field

from sluice.engine.kv_cache.prefix_cache import BlockHash
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
    block_hashes: list[BlockHash] = field(default_factory=list)
    """Chained hashes of the first full blocks of its known tokens, computed as needed. Known
    tokens never change, so they stay valid across preemption."""
    num_cached_blocks: int = 0
    """Leading entries of `block_ids` already offered to the prefix cache."""
    status: RequestStatus = RequestStatus.WAITING
    finish_reason: FinishReason | None = None
    num_preemptions: int = 0
    draft_token_ids: tuple[int, ...] = ()
    """Guesses of the tokens after its last one, verified in the step it is scheduled in."""

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_uncomputed_tokens(self) -> int:
        return self.num_tokens - self.num_computed_tokens

    @property
    def wants_prompt_logprobs(self) -> bool:
        """Prompt logprobs are wanted until they are handed over with the first token."""
        return self.sampling.prompt_logprobs and not self.output_token_ids

    @property
    def computes_every_position(self) -> bool:
        """The runner must compute every position from 0, so no cached prefix may be skipped:
        a penalty counts every token of the sequence, prompt logprobs need every prompt
        position's logits."""
        return self.sampling.has_penalty or self.wants_prompt_logprobs

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
