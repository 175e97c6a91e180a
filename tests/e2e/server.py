"""Starts a real `sluice serve` process on a free loopback port and talks to it over HTTP."""

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

STARTUP_TIMEOUT_S = 180
TEST_SERVER_FLAGS = ("--max-batch-total-tokens", "32768")
"""A small KV cache: test servers start faster and leave memory to the others."""
SHORT_PROMPTS_FLAGS = ("--max-batch-prefill-tokens", "256")
"""For a server whose tests send only short prompts: prompts and steps of up to 256 tokens, so
that its worst-case step is short on a 2-core CPU."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SLUICE_COMMAND = (sys.executable, "-m", "sluice")


class SluiceServer:
    def __init__(
        self,
        *flags: str,
        log_path: Path,
        command: Sequence[str] = SLUICE_COMMAND,
        host: str = "127.0.0.1",
        env: Mapping[str, str] | None = None,
    ) -> None:
        """`host`: the address it listens on and is reached at."""
        self.host = host
        self.port = free_port()
        self.url = f"http://{host}:{self.port}"
        self.log_path = log_path
        argv = [*command, "serve", "--hostname", host, "--port", str(self.port)]
        argv += [*TEST_SERVER_FLAGS, *flags]
        self._log = log_path.open("w")
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def health_statuses_until_ready(self) -> list[int]:
        """Poll /health until it answers 200; returns every status seen on the way."""
        statuses: list[int] = []
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()}")
            try:
                status = httpx.get(f"{self.url}/health", timeout=2).status_code
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            statuses.append(status)
            if status == 200:
                return statuses
            time.sleep(0.1)
        raise TimeoutError(
            f"server not ready in {STARTUP_TIMEOUT_S}s:\n{self.log_path.read_text()}"
        )

    def engine_pid(self) -> int:
        return self.spawned_pids()[0]

    def spawned_pids(self) -> list[int]:
        """The engine process, then this host's other shards, in the order they started."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        pids = [int(pid) for pid in children.split()]
        spawned = [p for p in pids if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
        if not spawned:
            raise LookupError(f"no engine process among {pids}")
        return spawned

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def stream_events(
    client: httpx.Client, url: str, body: dict[str, Any], route: str = "/generate_stream"
) -> list[dict[str, Any]]:
    """POST to a streaming route and return every SSE `data:` payload, parsed."""
    events = []
    with client.stream("POST", url + route, json=body, timeout=300) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line.removeprefix("data:")))
    return events


def last_event_after(server_url: str, kill: Callable[[], None]) -> dict[str, Any]:
    """Start a long stream, call `kill` once its first token has arrived, and return the
    stream's last event (which must come: a stream never ends in silence)."""
    body = {
        "inputs": "Count to a thousand.",
        "parameters": {"max_new_tokens": 400, "ignore_eos": True},
    }
    with (
        httpx.Client() as client,
        client.stream("POST", f"{server_url}/generate_stream", json=body, timeout=120) as response,
    ):
        events = (
            json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")
        )
        assert "token" in next(events)
        kill()
        return list(events)[-1]


def wait_for_exit(process: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    """The process's exit code once it exits, or None if it still runs after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    return process.returncode


def metric_samples(text: str, name: str) -> dict[str, float]:
    """`{sample name with labels: value}` for one metric family of a Prometheus page."""
    samples = {}
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def running_server(
    tmp_dir: Path,
    name: str,
    flags: Sequence[str] = (),
    command: Sequence[str] = SLUICE_COMMAND,
    host: str = "127.0.0.1",
) -> Iterator[SluiceServer]:
    server = SluiceServer(*flags, log_path=tmp_dir / f"{name}.log", command=command, host=host)
    try:
        server.health_statuses_until_ready()
        yield server
    finally:
        server.stop()


__all__ = [
    "SHORT_PROMPTS_FLAGS",
    "SluiceServer",
    "free_port",
    "last_event_after",
    "metric_samples",
    "running_server",
    "stream_events",
    "wait_for_exit",
]
