"""A client that stops reading its stream (a raw socket that never reads) costs nothing for
long: another client is served meanwhile, and after `--client-stall-timeout` its request is
aborted, its KV blocks freed and its concurrency permit returned. A client whose network
vanishes (a half-open connection) is found by TCP keep-alive probes after `--tcp-keepalive`
and its request aborted. The server runs in a network namespace whose TCP send buffers stay
small, so that its writes block as they would to a real client that went quiet (on loopback
the kernel would buffer the whole stream)."""

import json
import socket
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.network_namespaces import OneHost, host_with_small_send_buffers, missing_tools
from tests.e2e.server import SHORT_PROMPTS_FLAGS, SluiceServer, metric_samples, running_server

pytestmark = pytest.mark.skipif(missing_tools() is not None, reason=str(missing_tools()))

STALL_TIMEOUT_S = 2
KEEPALIVE_S = 4
"""Longer than the stall timeout: unacknowledged data also times out after twice this."""


@pytest.fixture(scope="module")
def host() -> Iterator[OneHost]:
    with host_with_small_send_buffers(16384) as one_host:
        yield one_host


@pytest.fixture(scope="module")
def server(host: OneHost, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SluiceServer]:
    flags = (
        *SHORT_PROMPTS_FLAGS,
        *("--client-stall-timeout", str(STALL_TIMEOUT_S), "--tcp-keepalive", str(KEEPALIVE_S)),
    )
    yield from running_server(
        tmp_path_factory.mktemp("stalls"),
        "server",
        (*flags, "--max-concurrent-requests", "2"),
        command=(*host.command(), sys.executable, "-m", "sluice"),
        host=host.address,
    )


def _blocks_in_use(server: SluiceServer) -> float:
    """After a one-token request: the gauge is refreshed by engine steps only."""
    assert _generate(server, max_new_tokens=1) == 200
    page = httpx.get(f"{server.url}/metrics", timeout=10).text
    return metric_samples(page, "sluice_kv_cache_blocks_used")["sluice_kv_cache_blocks_used"]


def _long_request(server: SluiceServer, host: OneHost, route: str) -> socket.socket:
    """2,000 tokens asked for on a socket with the smallest receive buffer, never read."""
    body = json.dumps(
        {
            "inputs": "Count to a thousand.",
            "parameters": {"max_new_tokens": 2000, "ignore_eos": True, "top_n_tokens": 5},
        }
    ).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect((host.address, server.port))
    head = (
        f"POST {route} HTTP/1.1\r\nHost: {host.address}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def _wait_until_generating(server: SluiceServer, baseline: float) -> None:
    started = time.monotonic()
    while _blocks_in_use(server) == baseline and time.monotonic() - started < 30:
        time.sleep(0.2)
    assert _blocks_in_use(server) > baseline


def _generate(server: SluiceServer, max_new_tokens: int = 3) -> int:
    body = {"inputs": "Hi", "parameters": {"max_new_tokens": max_new_tokens}}
    return httpx.post(f"{server.url}/generate", json=body, timeout=60).status_code


def test_a_client_that_stops_reading_is_aborted_and_frees_its_blocks(
    server: SluiceServer, host: OneHost
) -> None:
    baseline = _blocks_in_use(server)
    sock = _long_request(server, host, "/generate_stream")
    try:
        started = time.monotonic()
        _wait_until_generating(server, baseline)  # and another client is served meanwhile
        # (a one-token request each time)

        # Its 2,000 tokens would take well over 20 s on these CPUs; its buffers fill after a
        # few hundred, and the stall timeout ends it then.
        while _blocks_in_use(server) > baseline and time.monotonic() - started < 60:
            time.sleep(0.2)
        assert _blocks_in_use(server) == baseline
        assert time.monotonic() - started < 20
        assert [_generate(server), _generate(server)] == [200, 200]  # both permits are free
    finally:
        sock.close()
    assert f"its client read nothing for {STALL_TIMEOUT_S} s" in server.log_path.read_text()


def test_a_client_whose_network_vanishes_is_found_and_its_request_aborted(
    server: SluiceServer, host: OneHost
) -> None:
    baseline = _blocks_in_use(server)
    sock = _long_request(server, host, "/generate")  # silent until its answer is whole
    try:
        _wait_until_generating(server, baseline)
        with host.unplugged():
            # The probes start after KEEPALIVE_S of silence, and give up after as long again;
            # the 2,000 tokens would take well over 20 s.
            time.sleep(3 * KEEPALIVE_S + 2)
        started = time.monotonic()
        while _blocks_in_use(server) > baseline and time.monotonic() - started < 10:
            time.sleep(0.2)
        assert _blocks_in_use(server) == baseline
    finally:
        sock.close()
