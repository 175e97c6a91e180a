"""What the HTTP edge refuses before a route runs: API key (401), content type (415), body
size (413), concurrency (429), open connections (503), request heads over their size (431),
requests that do not arrive in time (408); and CORS."""

import concurrent.futures
import json
import socket
import time

import httpx
import pytest

from tests.e2e.guarded import API_KEY, MAX_CONNECTIONS, READ_TIMEOUT_S
from tests.e2e.server import SluiceServer, stream_events
from tests.e2e.test_generate import PROMPTS


def _auth(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_api_key_guards_every_route_but_health(guarded: SluiceServer) -> None:
    body = {"inputs": "Hi", "parameters": {"max_new_tokens": 2}}
    assert httpx.get(f"{guarded.url}/health").status_code == 200
    for method, path in [("POST", "/generate"), ("POST", "/generate_stream"), ("GET", "/info")]:
        refused = httpx.request(method, f"{guarded.url}{path}", json=body)
        assert refused.status_code == 401
        assert refused.json()["error_type"] == "unauthorized"
        wrong = httpx.request(method, f"{guarded.url}{path}", json=body, headers=_auth("nope"))
        assert wrong.status_code == 401
    ok = httpx.post(f"{guarded.url}/generate", json=body, headers=_auth(), timeout=60)
    assert ok.status_code == 200
    # TGI compares the lowercased header: the key matches whatever its case.
    lower = httpx.post(f"{guarded.url}/generate", json=body, headers=_auth(API_KEY.lower()))
    assert lower.status_code == 200


def test_payload_limit_gives_413(guarded: SluiceServer) -> None:
    body = {"inputs": "x" * 6000}
    response = httpx.post(f"{guarded.url}/generate", json=body, headers=_auth())
    assert response.status_code == 413
    assert response.json()["error_type"] == "payload_too_large"


def test_cors_allows_the_configured_origin_only(guarded: SluiceServer) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    allowed = httpx.options(
        f"{guarded.url}/generate", headers={"Origin": "http://allowed.example", **preflight}
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://allowed.example"
    other = httpx.options(
        f"{guarded.url}/generate", headers={"Origin": "http://other.example", **preflight}
    )
    assert "access-control-allow-origin" not in other.headers


def test_no_cors_headers_without_cors_allow_origin(server: SluiceServer) -> None:
    # TGI allows any origin then; no header at all is safer: other sites' pages cannot read
    # the answers in a browser.
    preflight = httpx.options(
        f"{server.url}/generate",
        headers={"Origin": "http://any.example", "Access-Control-Request-Method": "POST"},
    )
    answer = httpx.get(f"{server.url}/info", headers={"Origin": "http://any.example"})

    assert answer.status_code == 200
    for response in (preflight, answer):
        assert not any(name.startswith("access-control-") for name in response.headers)


def test_requests_beyond_max_concurrent_get_429(guarded: SluiceServer) -> None:
    long = {"inputs": PROMPTS[0], "parameters": {"max_new_tokens": 60, "ignore_eos": True}}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        busy = [
            pool.submit(
                httpx.post, f"{guarded.url}/generate", json=long, headers=_auth(), timeout=120
            )
            for _ in range(2)
        ]
        _wait_until_in_flight(guarded, 2)
        refused = httpx.post(f"{guarded.url}/generate", json=long, headers=_auth())
        with httpx.Client(headers=_auth()) as client:
            events = stream_events(client, guarded.url, long)
        assert all(future.result().status_code == 200 for future in busy)
    assert refused.status_code == 429
    assert refused.json() == {"error": "Model is overloaded", "error_type": "overloaded"}
    assert events == [{"error": "Model is overloaded", "error_type": "overloaded"}]


def test_a_burst_of_ten_times_the_concurrency_limit_gets_answers_or_429(
    guarded: SluiceServer,
) -> None:
    body = {"inputs": PROMPTS[0], "parameters": {"max_new_tokens": 30, "ignore_eos": True}}
    limit = 2  # --max-concurrent-requests of this server
    with concurrent.futures.ThreadPoolExecutor(10 * limit) as pool:
        burst = [
            pool.submit(
                httpx.post, f"{guarded.url}/generate", json=body, headers=_auth(), timeout=120
            )
            for _ in range(10 * limit)
        ]
        responses = [future.result() for future in burst]

    statuses = sorted(response.status_code for response in responses)
    assert set(statuses) <= {200, 429} and statuses.count(200) >= limit, statuses
    assert statuses.count(429) >= limit  # the burst arrives well within one answer's time
    for response in responses:
        if response.status_code == 429:
            assert response.json() == {"error": "Model is overloaded", "error_type": "overloaded"}
    assert httpx.get(f"{guarded.url}/health").status_code == 200


def _wait_until_in_flight(server: SluiceServer, count: int) -> None:
    """Until the server's batch holds `count` running requests."""
    for _ in range(600):
        metrics = httpx.get(f"{server.url}/metrics", headers=_auth()).text
        for line in metrics.splitlines():
            if line.startswith("tgi_batch_current_size ") and float(line.split()[1]) >= count:
                return
        time.sleep(0.01)
    raise TimeoutError("requests never reached the batch")


def test_missing_content_type_gives_415(server: SluiceServer) -> None:
    response = httpx.post(f"{server.url}/generate", content=b'{"inputs":"Hi"}')
    assert response.status_code == 415
    assert response.json() == {
        "error": "Expected request with `Content-Type: application/json`",
        "error_type": "unsupported_media_type",
    }
    text = httpx.post(
        f"{server.url}/generate", content=b"{}", headers={"Content-Type": "text/plain"}
    )
    assert text.status_code == 415


def test_json_output_logs_json_lines(guarded: SluiceServer) -> None:
    lines = [line for line in guarded.log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert {"server", "engine"} <= {record["process"] for record in records}
    assert all({"timestamp", "level", "message", "target"} <= set(record) for record in records)


def test_a_request_head_over_max_header_bytes_gets_431(guarded: SluiceServer) -> None:
    response = httpx.get(f"{guarded.url}/health", headers={"X-Padding": "a" * 20_000})
    assert response.status_code == 431
    assert response.text == "Request line and headers exceed 16384 bytes"
    assert httpx.get(f"{guarded.url}/health", headers={"X-Padding": "a" * 8_000}).is_success


@pytest.mark.parametrize("stalls_in", ["head", "body"])
def test_a_request_that_does_not_arrive_in_time_gets_408(
    guarded: SluiceServer, stalls_in: str
) -> None:
    body = b'{"inputs": "Hi", "parameters": {"max_new_tokens": 2}}'
    head = (
        f"POST /generate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    whole = head + body
    cut = len(head) // 2 if stalls_in == "head" else len(head) + 5
    with socket.create_connection((guarded.host, guarded.port)) as sock:
        sock.settimeout(10)
        started = time.monotonic()
        # A byte a second keeps the connection busy, and does not extend the deadline.
        sock.sendall(whole[: cut - 5])
        for index in range(cut - 5, cut):
            sock.sendall(whole[index : index + 1])
            time.sleep(1)
        reply = _read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert reply.endswith(f"did not arrive whole in {READ_TIMEOUT_S} s".encode())
    assert time.monotonic() - started < READ_TIMEOUT_S + 5
    # A request that arrives in time on a connection of its own is served as ever.
    assert httpx.post(f"{guarded.url}/generate", content=body, headers=_json_auth()).is_success


def test_connections_over_max_connections_get_503_until_some_close(
    guarded: SluiceServer,
) -> None:
    idle = [socket.create_connection((guarded.host, guarded.port)) for _ in range(MAX_CONNECTIONS)]
    try:
        refused = httpx.get(f"{guarded.url}/health")
    finally:
        for sock in idle:
            sock.close()
    assert refused.status_code == 503
    assert refused.json() == {"error": "Too many open connections", "error_type": "overloaded"}
    time.sleep(0.5)  # the server sees the closes
    assert httpx.get(f"{guarded.url}/health").status_code == 200


def _json_auth() -> dict[str, str]:
    return {**_auth(), "Content-Type": "application/json"}


def _read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


def test_an_idle_keep_alive_connection_is_closed(guarded: SluiceServer) -> None:
    with socket.create_connection((guarded.host, guarded.port)) as sock:
        sock.settimeout(15)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK\r\n")
        idle_since = time.monotonic()
        assert _read_until_closed(sock) == b""
    assert time.monotonic() - idle_since < 10  # uvicorn's keep-alive timeout: 5 s
