"""ServerMetrics.observe_step: the KV cache, preemption and prefix cache metrics it derives from
each step's StepStats, as the /metrics page renders them."""

import msgspec

from sluice.api.metrics import ServerMetrics
from sluice.ipc.messages import StepStats
from tests.e2e.server import metric_samples

_STATS = StepStats(
    step_index=0,
    num_requests=1,
    num_prefill_tokens=0,
    num_decode_tokens=1,
    duration_s=0.01,
    num_waiting=0,
    num_running=1,
    num_free_blocks=90,
    num_blocks=128,
    block_size=16,
)


def _value(metrics: ServerMetrics, sample: str) -> float:
    return metric_samples(metrics.render().decode(), sample)[sample]


def test_server_metrics_kv_cache_blocks_used_excludes_free_and_cached_blocks() -> None:
    metrics = ServerMetrics()

    metrics.observe_step(_STATS)

    assert _value(metrics, "sluice_kv_cache_blocks_total") == 128
    assert _value(metrics, "sluice_kv_cache_blocks_used") == 128 - 90
    assert _value(metrics, "tgi_batch_current_max_tokens") == (128 - 90) * 16


def test_server_metrics_counters_follow_the_engine_totals() -> None:
    metrics = ServerMetrics()
    totals = [(1, 100, 0), (1, 100, 0), (3, 400, 240)]

    for step, (preemptions, queried, hits) in enumerate(totals):
        metrics.observe_step(
            msgspec.structs.replace(
                _STATS,
                step_index=step,
                num_preemptions=preemptions,
                prefix_cache_queried_tokens=queried,
                prefix_cache_hit_tokens=hits,
            )
        )

    page = metrics.render().decode()
    assert "# TYPE sluice_preemptions counter" in page
    assert _value(metrics, "sluice_preemptions") == 3  # a bare name, as TGI's counters
    assert _value(metrics, "sluice_prefix_cache_queried_tokens") == 400
    assert _value(metrics, "sluice_prefix_cache_hit_tokens") == 240
    assert _value(metrics, "sluice_prefix_cache_hit_rate") == 240 / 400


def test_server_metrics_hit_rate_is_zero_before_any_lookup() -> None:
    metrics = ServerMetrics()

    metrics.observe_step(_STATS)

    assert _value(metrics, "sluice_prefix_cache_hit_rate") == 0
    assert _value(metrics, "sluice_preemptions") == 0


def test_server_metrics_count_drafts_and_skipped_tokens_per_request() -> None:
    metrics = ServerMetrics()

    metrics.observe_step(_STATS)  # a step without drafts observes nothing
    metrics.observe_step(
        msgspec.structs.replace(_STATS, num_draft_tokens=7, accepted_drafts=[3, 0])
    )
    metrics.observe_step(msgspec.structs.replace(_STATS, num_draft_tokens=4, accepted_drafts=[4]))

    assert _value(metrics, "sluice_speculative_draft_tokens") == 11
    assert _value(metrics, "sluice_speculative_accepted_tokens") == 7
    assert _value(metrics, "tgi_request_skipped_tokens_count") == 3
    assert _value(metrics, "tgi_request_skipped_tokens_sum") == 7
