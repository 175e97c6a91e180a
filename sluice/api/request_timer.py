"""Times one native generation from arrival to its last token, for TGI's per-request
metrics and the x-* timing headers of non-streamed responses."""

import time
from dataclasses import dataclass, field

from sluice.frontend.generation import GeneratedToken
from sluice.frontend.input_processor import ValidatedRequest


@dataclass(slots=True)
class RequestTimer:
    arrived: float = field(default_factory=time.perf_counter)
    validated: float | None = None
    first_token: float | None = None
    finished: float | None = None
    queue_s: float = 0.0
    input_length: int = 0
    max_new_tokens: int = 0
    generated_tokens: int = 0

    def mark_validated(self, request: ValidatedRequest) -> None:
        self.validated = time.perf_counter()
        self.input_length = len(request.prompt_token_ids)
        self.max_new_tokens = request.sampling.max_new_tokens

    def mark_token(self, token: GeneratedToken) -> None:
        now = time.perf_counter()
        if self.first_token is None:
            self.first_token = now
            self.queue_s = token.queue_s or 0.0
        self.generated_tokens = token.index
        if token.finish_reason is not None:
            self.finished = now

    @property
    def validation_s(self) -> float:
        return (self.validated or self.arrived) - self.arrived

    @property
    def total_s(self) -> float:
        return (self.finished or time.perf_counter()) - self.arrived

    @property
    def inference_s(self) -> float:
        """From the first step that computed the request to its last token."""
        return max(0.0, self.total_s - self.validation_s - self.queue_s)

    @property
    def time_to_first_token_s(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.arrived

    @property
    def time_per_token_s(self) -> float:
        return self.inference_s / max(1, self.generated_tokens)

    def headers(self, compute_type: str, num_characters: int) -> dict[str, str]:
        """TGI's x-* headers of a non-streamed response (times in whole milliseconds)."""
        return {
            "x-compute-type": compute_type,
            "x-compute-time": f"{self.inference_s:.6f}",
            "x-compute-characters": str(num_characters),
            "x-total-time": str(round(self.total_s * 1000)),
            "x-validation-time": str(round(self.validation_s * 1000)),
            "x-queue-time": str(round(self.queue_s * 1000)),
            "x-inference-time": str(round(self.inference_s * 1000)),
            "x-time-per-token": str(round(self.time_per_token_s * 1000)),
            "x-prompt-tokens": str(self.input_length),
            "x-generated-tokens": str(self.generated_tokens),
        }
