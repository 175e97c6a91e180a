"""Two hosts, one shard each: network namespaces joined by a veth pair, host 1 with a /tmp and
/dev/shm of its own so that nothing but TCP passes between them, and no GLOO_SOCKET_IFNAME:
each host finds the interface that reaches the master address by itself. The pair answers as
one process does; a host that dies ends the other."""

import concurrent.futures
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.network_namespaces import TwoHosts, missing_tools, two_hosts
from tests.e2e.server import (
    SHORT_PROMPTS_FLAGS,
    TEST_SERVER_FLAGS,
    SluiceServer,
    free_port,
    last_event_after,
    wait_for_exit,
)
from tests.e2e.test_generate import PROMPTS

pytestmark = pytest.mark.skipif(missing_tools() is not None, reason=str(missing_tools()))

EXIT_TIMEOUT_S = 60


@contextlib.contextmanager
def _two_host_server(tmp_path: Path) -> Iterator[tuple[SluiceServer, subprocess.Popen[bytes]]]:
    """Host 0's server (reached through its API address) and host 1's process."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_SOCKET_IFNAME")}
    with two_hosts() as hosts, (tmp_path / "host1.log").open("w") as host1_log:
        flags = _flags(hosts)
        host1 = subprocess.Popen(
            [*hosts.command(1, private_tmp=True), sys.executable, "-m", "sluice", "serve"]
            + [*TEST_SERVER_FLAGS, *flags, "--node-rank", "1"],
            stdout=host1_log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its shard too, so that one signal ends the host
        )
        host0 = SluiceServer(
            *flags,
            "--node-rank",
            "0",
            log_path=tmp_path / "host0.log",
            command=(*hosts.command(0), sys.executable, "-m", "sluice"),
            host=hosts.api_address,
            env=env,
        )
        try:
            host0.health_statuses_until_ready()
            yield host0, host1
        finally:
            host0.stop()
            if host1.poll() is None:
                os.killpg(host1.pid, signal.SIGKILL)
            host1.wait()


def _flags(hosts: TwoHosts) -> tuple[str, ...]:
    return (
        *("--num-shard", "2", "--nnodes", "2"),
        *("--master-addr", hosts.shard_addresses[0], "--master-port", str(free_port())),
        *("--dtype", "float32", *SHORT_PROMPTS_FLAGS),
    )


def _greedy_text(server: SluiceServer, prompt: str) -> str:
    body = {"inputs": prompt, "parameters": {"max_new_tokens": 24}}
    response = httpx.post(f"{server.url}/generate", json=body, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()["generated_text"]


def test_two_hosts_answer_as_one_process_and_host_1_exits_with_host_0(
    tmp_path: Path, fp32_server: SluiceServer
) -> None:
    prompts = PROMPTS[:4]
    expected = [_greedy_text(fp32_server, prompt) for prompt in prompts]
    with _two_host_server(tmp_path) as (host0, host1):
        with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
            answers = list(pool.map(lambda prompt: _greedy_text(host0, prompt), prompts))
        assert answers == expected
        host0.stop()
        assert host1.wait(timeout=EXIT_TIMEOUT_S) == 0  # host 0 told its shard to stop
    assert "collectives use interface slc" in (tmp_path / "host1.log").read_text()


def test_host_1_killed_mid_stream_ends_the_stream_and_host_0(tmp_path: Path) -> None:
    with _two_host_server(tmp_path) as (host0, host1):
        last = last_event_after(host0.url, lambda: os.killpg(host1.pid, signal.SIGKILL))
        assert last["error_type"] == "generation"
        assert wait_for_exit(host0.process, EXIT_TIMEOUT_S) not in (None, 0)
