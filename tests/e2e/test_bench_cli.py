"""`sluice bench` end to end: the real CLI against a real server, with a tiny load."""

import json
import subprocess
import sys
from pathlib import Path

import httpx

from sluice.bench.client import openai_completion_request, run_workload_blocking
from tests.e2e.server import SluiceServer

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _bench(url: str, *flags: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "sluice", "bench", "--url", url, "--runs", "1", *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_bench_sweep_writes_figures_and_plots(server: SluiceServer, tmp_path: Path) -> None:
    flags = ("--workload", "sweep", "--concurrency", "1,2", "--num-prompts", "2")
    result = _bench(server.url, *flags, "--max-new-tokens", "4", "--output", str(tmp_path))

    assert result.returncode == 0, result.stderr
    assert "output tokens/s" in result.stdout
    assert "4/4" in result.stderr  # the progress bar on stderr: 2 prompts at 2 concurrencies
    assert "HTTP Request" not in result.stderr  # no log line per request
    document = json.loads((tmp_path / "sweep.json").read_text())
    assert document["num_failed"] == 0
    assert document["server_info"]["model_id"]
    assert [s["concurrency"] for s in document["scenarios"]] == [1, 2]
    for scenario in document["scenarios"]:
        (run,) = scenario["runs"]
        assert run["num_tokens"] == 2 * 4  # prompts x max_new_tokens, EOS ignored
        assert run["output_tokens_per_s"] > 0
        assert 0 < run["ttft_p50_s"] <= run["latency_p50_s"]
        assert scenario["summary"]["output_tokens_per_s"]["median"] > 0
    for name in ("sweep_throughput.png", "sweep_latency.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG_SIGNATURE)


def test_bench_stops_when_the_url_serves_no_generation(server: SluiceServer) -> None:
    """A URL that answers 404 fails the warm-up request: exit 1 with the reason, no table."""
    result = _bench(f"{server.url}/nope", "--workload", "w1")

    assert result.returncode == 1
    assert f"warm-up request to {server.url}/nope failed: HTTP 404" in result.stderr
    assert "failed requests" not in result.stdout


def test_the_openai_client_times_every_token_of_a_completion_stream(server: SluiceServer) -> None:
    """The client bench/vllm_comparison.py sends to both servers."""
    request = openai_completion_request("HuggingFaceTB/SmolLM2-135M-Instruct")
    prompts = ["Hello", "The sea is"]

    run = run_workload_blocking(server.url, prompts, 7, concurrency=2, request=request)

    assert run.errors == []
    assert [timing.num_tokens for timing in run.completed] == [7, 7]
    for prompt, timing in zip(prompts, run.completed, strict=True):  # in prompt order
        native = {"inputs": prompt, "parameters": {"max_new_tokens": 7}}
        body = httpx.post(f"{server.url}/generate", json=native, timeout=60).json()
        assert timing.generated_text == body["generated_text"]
