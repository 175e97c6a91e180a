"""--otlp-endpoint: each request becomes a span exported over OTLP/HTTP, parented by the
caller's W3C traceparent."""

import time

import httpx

from tests.e2e.otlp_collector import OTLP_SERVICE_NAME, OtlpCollector
from tests.e2e.server import SluiceServer

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_requests_are_exported_as_spans_under_the_callers_trace(
    options_server: SluiceServer, otlp_collector: OtlpCollector
) -> None:
    traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    body = {"inputs": "Hi", "parameters": {"max_new_tokens": 3}}
    response = httpx.post(
        f"{options_server.url}/generate",
        json=body,
        headers={"traceparent": traceparent},
        timeout=60,
    )
    assert response.status_code == 200
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        spans = [body for path, body in otlp_collector.exports if path == "/v1/traces"]
        # The server is shared: wait for this request's trace, not any earlier span.
        if any(bytes.fromhex(TRACE_ID) in body for body in spans):
            break
        time.sleep(0.2)
    exported = b"".join(body for path, body in otlp_collector.exports if path == "/v1/traces")
    assert b"POST /generate" in exported
    assert bytes.fromhex(TRACE_ID) in exported
    assert OTLP_SERVICE_NAME.encode() in exported
