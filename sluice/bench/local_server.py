"""Starts a `sluice serve` process on a free loopback port for a benchmark script, and stops
it afterwards, so that each measurement can begin from a fresh server (a cold prefix cache)."""

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping

import httpx

READY_TIMEOUT_S = 300


@contextlib.contextmanager
def local_server(*flags: str, env: Mapping[str, str] | None = None) -> Iterator[str]:
    """A running server with these extra `sluice serve` flags; yields its base URL."""
    with local_server_process(*flags, env=env) as (url, _):
        yield url


@contextlib.contextmanager
def local_server_process(
    *flags: str, env: Mapping[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """As `local_server`, also yielding the `sluice serve` process (to watch its resources)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "sluice", "serve", "--hostname", "127.0.0.1"]
    server = subprocess.Popen(
        [*command, "--port", str(port), *flags],
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    try:
        _wait_ready(url, server)
        yield url, server
    finally:
        server.terminate()
        server.wait(timeout=60)


def git_commit() -> str:
    """The short commit of the working tree, to stamp benchmark results with."""
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def _wait_ready(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"sluice serve exited with status {server.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"sluice did not become ready within {READY_TIMEOUT_S} s")
