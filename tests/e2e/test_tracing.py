"""--otlp-endpoint: each request becomes a span exported over OTLP/HTTP, parented by the
caller's W3C traceparent."""

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import SHORT_PROMPTS_FLAGS, SluiceServer, free_port, running_server

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


class _Collector(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", free_port()), _CollectorHandler)
        self.exports: list[tuple[str, bytes]] = []


class _CollectorHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.exports.append((self.path, body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def collector() -> Iterator[_Collector]:
    server = _Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def traced(
    collector: _Collector, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SluiceServer]:
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
    flags = (
        "--otlp-endpoint",
        endpoint,
        "--otlp-service-name",
        "sluice-under-test",
        *SHORT_PROMPTS_FLAGS,
    )
    yield from running_server(Path(tmp_path_factory.mktemp("traced")), "traced", flags)


def test_requests_are_exported_as_spans_under_the_callers_trace(
    traced: SluiceServer, collector: _Collector
) -> None:
    traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    body = {"inputs": "Hi", "parameters": {"max_new_tokens": 3}}
    response = httpx.post(
        f"{traced.url}/generate", json=body, headers={"traceparent": traceparent}, timeout=60
    )
    assert response.status_code == 200
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        spans = [body for path, body in collector.exports if path == "/v1/traces"]
        if any(b"POST /generate" in body for body in spans):
            break
        time.sleep(0.2)
    exported = b"".join(body for path, body in collector.exports if path == "/v1/traces")
    assert b"POST /generate" in exported
    assert bytes.fromhex(TRACE_ID) in exported
    assert b"sluice-under-test" in exported
