"""An OTLP/HTTP collector on a free loopback port that keeps every export it is sent."""

import http.server
import threading
from collections.abc import Iterator

from tests.e2e.server import free_port

OTLP_SERVICE_NAME = "sluice-under-test"
"""The `--otlp-service-name` of the server that exports to the collector."""


class OtlpCollector(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", free_port()), _CollectorHandler)
        self.exports: list[tuple[str, bytes]] = []
        """(path, body) of each POST, in arrival order."""

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _CollectorHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.exports.append((self.path, body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def running_collector() -> Iterator[OtlpCollector]:
    collector = OtlpCollector()
    thread = threading.Thread(target=collector.serve_forever, daemon=True)
    thread.start()
    try:
        yield collector
    finally:
        collector.shutdown()
