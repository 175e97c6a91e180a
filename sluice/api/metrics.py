"""Prometheus collectors, with TGI's metric names where TGI has the metric."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from sluice.ipc.messages import StepStats

DURATION_BUCKETS = tuple(0.00015 * 1.5**k for k in range(35))
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_count = Counter("tgi_request_count", "Requests received", registry=r)
        self.request_success = Counter("tgi_request_success", "Requests completed", registry=r)
        self.request_failure = Counter(
            "tgi_request_failure", "Failed requests by cause", ["err"], registry=r
        )
        self.request_duration = Histogram(
            "tgi_request_duration", "End-to-end latency", buckets=DURATION_BUCKETS, registry=r
        )
        self.queue_size = Gauge("tgi_queue_size", "Requests waiting", registry=r)
        self.batch_current_size = Gauge(
            "tgi_batch_current_size", "Requests in the running batch", registry=r
        )
        self.batch_inference_count = Counter(
            "tgi_batch_inference_count", "Forward steps", ["method"], registry=r
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

    def observe_step(self, stats: StepStats) -> None:
        method = "prefill" if stats.num_prefill_tokens else "decode"
        self.batch_inference_count.labels(method).inc()
        self.batch_forward_duration.labels(method).observe(stats.duration_s)
        self.step_batch_size.observe(stats.num_requests)
        self.queue_size.set(stats.num_waiting)
        self.batch_current_size.set(stats.num_running)

    def render(self) -> bytes:
        return generate_latest(self.registry)
