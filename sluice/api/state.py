"""What the routes share: the engine client, the tokenizer, limits, permits and metrics."""

from dataclasses import dataclass, field

from starlette.requests import Request
from transformers import PreTrainedTokenizerBase

from sluice.api.metrics import ServerMetrics
from sluice.api.shutdown import Shutdown
from sluice.config import SluiceConfig
from sluice.errors import NotReadyError, OverloadedError
from sluice.frontend.engine_client import EngineClient
from sluice.frontend.input_processor import InputProcessor


@dataclass(slots=True)
class ServingState:
    config: SluiceConfig
    model_id: str
    model_sha: str | None
    tokenizer: PreTrainedTokenizerBase
    client: EngineClient
    eos_token_ids: tuple[int, ...]
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    shutdown: Shutdown = field(default_factory=lambda: Shutdown(timeout_s=90.0))
    _num_in_flight: int = 0
    _processor: InputProcessor | None = None

    @property
    def processor(self) -> InputProcessor:
        if not self.client.is_healthy:
            raise NotReadyError(self.client.failure or "the model is still loading")
        if self._processor is None:
            self._processor = InputProcessor(
                self.tokenizer, self.client.limits, self.eos_token_ids, self.config.api
            )
            self.metrics.set_limits(self.client.limits)
        return self._processor

    @property
    def compute_type(self) -> str:
        """TGI's x-compute-type: COMPUTE_TYPE when set, else `<shards>-<device>`."""
        if self.config.server.compute_type is not None:
            return self.config.server.compute_type
        ready = self.client.ready_info
        if ready is None:
            return f"{self.config.sharding.num_shard or 1}-unknown"
        return f"{ready.num_shard}-{ready.device}"

    def take_permit(self) -> None:
        """Count a request in flight, or refuse it (429) at the limit."""
        if self._num_in_flight >= self.config.scheduler.max_concurrent_requests:
            raise OverloadedError()
        self._num_in_flight += 1

    def release_permit(self) -> None:
        self._num_in_flight -= 1


def serving_state(request: Request) -> ServingState:
    """The state `create_app` attached to the application serving `request`."""
    state: ServingState = request.app.state.serving
    return state
