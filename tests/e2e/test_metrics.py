"""TGI's Prometheus metrics and x-* timing headers, as dashboards and clients read them."""

import httpx

from tests.e2e.server import SluiceServer, metric_samples
from tests.e2e.test_generate import PROMPTS

TGI_METRICS = {
    "tgi_request_count": "counter",
    "tgi_request_success": "counter",
    "tgi_request_failure": "counter",
    "tgi_request_duration": "histogram",
    "tgi_request_validation_duration": "histogram",
    "tgi_request_queue_duration": "histogram",
    "tgi_request_inference_duration": "histogram",
    "tgi_request_mean_time_per_token_duration": "histogram",
    "tgi_request_input_length": "histogram",
    "tgi_request_max_new_tokens": "histogram",
    "tgi_request_generated_tokens": "histogram",
    "tgi_queue_size": "gauge",
    "tgi_batch_current_size": "gauge",
    "tgi_batch_current_max_tokens": "gauge",
    "tgi_batch_max_total_tokens": "gauge",
    "tgi_batch_inference_count": "counter",
    "tgi_batch_inference_success": "counter",
    "tgi_batch_forward_duration": "histogram",
}
SLUICE_METRICS = {
    "sluice_kv_cache_blocks_total": "gauge",
    "sluice_kv_cache_blocks_used": "gauge",
    "sluice_preemptions": "counter",
    "sluice_prefix_cache_queried_tokens": "counter",
    "sluice_prefix_cache_hit_tokens": "counter",
    "sluice_prefix_cache_hit_rate": "gauge",
}


def test_generate_response_carries_tgi_timing_headers(server: SluiceServer) -> None:
    body = {"inputs": PROMPTS[4], "parameters": {"max_new_tokens": 6, "ignore_eos": True}}
    response = httpx.post(f"{server.url}/generate", json=body, timeout=60)
    headers = response.headers
    assert headers["x-generated-tokens"] == "6"
    assert int(headers["x-prompt-tokens"]) > 0
    assert headers["x-compute-characters"] == str(len(PROMPTS[4]))
    assert headers["x-compute-type"] == "1-cpu"
    total = int(headers["x-total-time"])
    parts = [
        int(headers[name]) for name in ("x-validation-time", "x-queue-time", "x-inference-time")
    ]
    assert abs(sum(parts) - total) <= 2  # each rounded to whole milliseconds
    assert float(headers["x-compute-time"]) > 0
    stream = httpx.post(f"{server.url}/generate_stream", json=body, timeout=60)
    assert stream.headers["x-compute-type"] == "1-cpu"
    assert stream.headers["x-accel-buffering"] == "no"


def test_metrics_have_tgi_names_and_types(server: SluiceServer) -> None:
    before = httpx.get(f"{server.url}/metrics").text
    body = {"inputs": PROMPTS[5], "parameters": {"max_new_tokens": 4, "ignore_eos": True}}
    assert httpx.post(f"{server.url}/generate", json=body, timeout=60).status_code == 200
    httpx.post(f"{server.url}/generate", json={"inputs": "", "parameters": {}}, timeout=60)
    page = httpx.get(f"{server.url}/metrics").text
    for name, kind in {**TGI_METRICS, **SLUICE_METRICS}.items():
        assert f"# TYPE {name} {kind}" in page, name

    def value(text: str, sample: str) -> float:
        return metric_samples(text, sample).get(sample, 0.0)

    assert value(page, "tgi_request_count") - value(before, "tgi_request_count") == 2
    assert value(page, "tgi_request_success") > value(before, "tgi_request_success")
    failures = 'tgi_request_failure{err="validation"}'
    assert value(page, failures) - value(before, failures) == 1
    generated = "tgi_request_generated_tokens_sum"
    assert value(page, generated) - value(before, generated) == 4
    assert value(page, "tgi_batch_max_total_tokens") == 32768
    assert value(page, "sluice_kv_cache_blocks_total") == 32768 // 16
    assert 0 <= value(page, "sluice_kv_cache_blocks_used") <= 32768 // 16


def test_chat_response_carries_tgi_timing_headers(server: SluiceServer) -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "temperature": 0}
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)
    usage = response.json()["usage"]
    assert response.headers["x-generated-tokens"] == str(usage["completion_tokens"])
    assert response.headers["x-prompt-tokens"] == str(usage["prompt_tokens"])
    assert int(response.headers["x-total-time"]) >= int(response.headers["x-inference-time"])
