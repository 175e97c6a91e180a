"""Prometheus collectors, with TGI's metric names, types and buckets where TGI has the metric;
sluice's own additions are prefixed `sluice_`."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
from prometheus_client.utils import floatToGoString

from sluice.api.request_timer import RequestTimer
from sluice.config import ServingLimits
from sluice.errors import SluiceError
from sluice.ipc.messages import StepStats

DURATION_BUCKETS = tuple(0.00015 * 1.5**k for k in range(35))
BATCH_SIZE_BUCKETS = tuple(2**k for k in range(11))


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_count = Counter("tgi_request_count", "Requests received", registry=r)
        self.request_success = Counter("tgi_request_success", "Requests completed", registry=r)
        self.request_failure = Counter(
            "tgi_request_failure", "Failed requests by cause", ["err"], registry=r
        )
        self._durations = {
            name: Histogram(name, help_text, buckets=DURATION_BUCKETS, registry=r)
            for name, help_text in (
                ("tgi_request_duration", "End-to-end latency"),
                ("tgi_request_validation_duration", "Arrival to enqueued"),
                ("tgi_request_queue_duration", "Enqueued to first step"),
                ("tgi_request_inference_duration", "First step to last token"),
                ("tgi_request_mean_time_per_token_duration", "Inference time per token"),
                ("sluice_request_time_to_first_token", "Arrival to first token"),
            )
        }
        self._sizes: dict[str, Histogram] = {}
        self.queue_size = Gauge("tgi_queue_size", "Requests waiting", registry=r)
        self.batch_current_size = Gauge(
            "tgi_batch_current_size", "Requests in the running batch", registry=r
        )
        self.batch_current_max_tokens = Gauge(
            "tgi_batch_current_max_tokens", "KV cache tokens held by the running batch", registry=r
        )
        self.batch_max_total_tokens = Gauge(
            "tgi_batch_max_total_tokens", "KV cache capacity in tokens", registry=r
        )
        self.batch_inference_count = Counter(
            "tgi_batch_inference_count", "Forward steps", ["method"], registry=r
        )
        self.batch_inference_success = Counter(
            "tgi_batch_inference_success", "Forward steps that succeeded", ["method"], registry=r
        )
        self.batch_inference_failure = Counter(
            "tgi_batch_inference_failure",
            "Forward steps where a request failed",
            ["method"],
            registry=r,
        )
        self.batch_forward_duration = Histogram(
            "tgi_batch_forward_duration",
            "Step duration",
            ["method"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.step_batch_size = Histogram(
            "sluice_step_batch_size",
            "Requests computed together in one step",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.kv_cache_blocks_total = Gauge(
            "sluice_kv_cache_blocks_total", "KV cache blocks", registry=r
        )
        self.kv_cache_blocks_used = Gauge(
            "sluice_kv_cache_blocks_used",
            "KV cache blocks held by requests (cached prefix blocks nobody holds are free)",
            registry=r,
        )
        self.preemptions = Counter(
            "sluice_preemptions", "Requests preempted for lack of KV blocks", registry=r
        )
        self.prefix_cache_queried_tokens = Counter(
            "sluice_prefix_cache_queried_tokens",
            "Tokens of admitted requests looked up in the prefix cache",
            registry=r,
        )
        self.prefix_cache_hit_tokens = Counter(
            "sluice_prefix_cache_hit_tokens",
            "Looked-up tokens found in the prefix cache (not computed)",
            registry=r,
        )
        self.prefix_cache_hit_rate = Gauge(
            "sluice_prefix_cache_hit_rate",
            "Prefix cache hit tokens / queried tokens since start",
            registry=r,
        )
        self.request_skipped_tokens = Summary(
            "tgi_request_skipped_tokens",
            "Speculative tokens accepted per request and step",
            registry=r,
        )
        self.speculative_draft_tokens = Counter(
            "sluice_speculative_draft_tokens", "Draft tokens verified (--speculate)", registry=r
        )
        self.speculative_accepted_tokens = Counter(
            "sluice_speculative_accepted_tokens",
            "Draft tokens the model accepted (--speculate)",
            registry=r,
        )
        self._engine_totals: dict[Counter, int] = {}
        """The engine's running totals as last seen, per counter that follows one."""

    @property
    def request_duration(self) -> Histogram:
        return self._durations["tgi_request_duration"]

    def set_limits(self, limits: ServingLimits) -> None:
        """Create the size histograms, whose buckets follow the serving limits, as TGI does."""
        if self._sizes:
            return
        self.batch_max_total_tokens.set(limits.max_batch_total_tokens)
        r = self.registry
        for name, help_text, top in (
            ("tgi_request_input_length", "Prompt tokens", limits.max_input_tokens),
            (
                "tgi_request_max_new_tokens",
                "Tokens the request may generate",
                limits.max_total_tokens,
            ),
            ("tgi_request_generated_tokens", "Tokens generated", limits.max_total_tokens),
        ):
            buckets = tuple(k * top / 100 for k in range(1, 101))
            self._sizes[name] = Histogram(name, help_text, buckets=buckets, registry=r)

    def observe_request(self, timer: RequestTimer) -> None:
        """A request that reached its final token."""
        self.request_success.inc()
        durations = self._durations
        durations["tgi_request_duration"].observe(timer.total_s)
        durations["tgi_request_validation_duration"].observe(timer.validation_s)
        durations["tgi_request_queue_duration"].observe(timer.queue_s)
        durations["tgi_request_inference_duration"].observe(timer.inference_s)
        durations["tgi_request_mean_time_per_token_duration"].observe(timer.time_per_token_s)
        if timer.time_to_first_token_s is not None:
            durations["sluice_request_time_to_first_token"].observe(timer.time_to_first_token_s)
        if self._sizes:
            self._sizes["tgi_request_input_length"].observe(timer.input_length)
            self._sizes["tgi_request_max_new_tokens"].observe(timer.max_new_tokens)
            self._sizes["tgi_request_generated_tokens"].observe(timer.generated_tokens)

    def observe_failure(self, error: SluiceError) -> None:
        """A request that ended with an error, counted by its TGI error type."""
        self.request_failure.labels(error.error_type).inc()

    def observe_step(self, stats: StepStats) -> None:
        method = "prefill" if stats.num_prefill_tokens else "decode"
        self.batch_inference_count.labels(method).inc()
        if stats.num_failed_requests:
            self.batch_inference_failure.labels(method).inc()
        else:
            self.batch_inference_success.labels(method).inc()
        self.batch_forward_duration.labels(method).observe(stats.duration_s)
        self.step_batch_size.observe(stats.num_requests)
        self.queue_size.set(stats.num_waiting)
        self.batch_current_size.set(stats.num_running)
        used_blocks = stats.num_blocks - stats.num_free_blocks
        self.batch_current_max_tokens.set(used_blocks * stats.block_size)
        self.kv_cache_blocks_total.set(stats.num_blocks)
        self.kv_cache_blocks_used.set(used_blocks)
        self._follow_total(self.preemptions, stats.num_preemptions)
        self._follow_total(self.prefix_cache_queried_tokens, stats.prefix_cache_queried_tokens)
        self._follow_total(self.prefix_cache_hit_tokens, stats.prefix_cache_hit_tokens)
        queried = stats.prefix_cache_queried_tokens
        self.prefix_cache_hit_rate.set(stats.prefix_cache_hit_tokens / queried if queried else 0)
        if stats.num_draft_tokens:
            self.speculative_draft_tokens.inc(stats.num_draft_tokens)
            self.speculative_accepted_tokens.inc(sum(stats.accepted_drafts))
            for accepted in stats.accepted_drafts:
                self.request_skipped_tokens.observe(accepted)

    def _follow_total(self, counter: Counter, total: int) -> None:
        """Advance `counter` by what the engine's running `total` gained since the last step."""
        counter.inc(max(0, total - self._engine_totals.get(counter, 0)))
        self._engine_totals[counter] = total

    def render(self) -> bytes:
        return render_tgi_exposition(self.registry)


def render_tgi_exposition(registry: CollectorRegistry) -> bytes:
    """Prometheus text format as TGI's exporter writes it: counters keep their bare names
    (`tgi_request_count`, not `tgi_request_count_total`, which dashboards built for TGI would
    miss), and no `_created` samples."""
    lines: list[str] = []
    for family in registry.collect():
        lines.append(f"# HELP {family.name} {_escape(family.documentation)}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            name = sample.name
            if family.type == "counter":
                name = name.removesuffix("_total")
            labels = ",".join(f'{key}="{_escape(value)}"' for key, value in sample.labels.items())
            rendered_labels = f"{{{labels}}}" if labels else ""
            lines.append(f"{name}{rendered_labels} {floatToGoString(sample.value)}")
    return ("\n".join(lines) + "\n").encode()


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
