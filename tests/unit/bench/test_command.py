"""run_bench against a fake TGI server: the table, the JSON and PNG files, failed requests
counted and turned into exit status 1, a failed warm-up, and no plots without matplotlib."""

import json
from pathlib import Path

import httpx
import pytest

from sluice.bench import command
from sluice.bench.command import BenchOptions, run_bench
from sluice.bench.workloads import load_workload
from tests.unit.bench.fake_server import MODEL_ID, fake_tgi

URL = "http://bench.test"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_run_bench_sweep_writes_json_and_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = BenchOptions(
        URL, "sweep", 2, (1, 2), max_new_tokens=4, num_prompts=3, output=tmp_path
    )

    assert run_bench(options, fake_tgi()) == 0

    out = capsys.readouterr().out
    assert f"({MODEL_ID})" in out
    assert "| output tokens/s" in out
    document = json.loads((tmp_path / "sweep.json").read_text())
    assert document["server_info"] == {"model_id": MODEL_ID}
    assert (document["url"], document["workload"], document["runs"]) == (URL, "sweep", 2)
    assert [s["name"] for s in document["scenarios"]] == ["c=1", "c=2"]
    runs = [run for scenario in document["scenarios"] for run in scenario["runs"]]
    assert [run["num_tokens"] for run in runs] == [12] * 4  # 3 prompts x 4 tokens
    for name in ("sweep_throughput.png", "sweep_latency.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG_SIGNATURE)


def test_run_bench_counts_failed_requests_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    second_prompt = load_workload("w2").prompts[1]  # the warm-up sends the first
    options = BenchOptions(URL, "w2", 2, max_new_tokens=2, num_prompts=3, output=tmp_path)

    assert run_bench(options, fake_tgi(failing_prompts={second_prompt})) == 1

    captured = capsys.readouterr()
    assert "2 of 6" in captured.out  # the table's failed-requests row
    assert "2 request(s) failed" in captured.err
    assert "HTTP 422: no" in captured.err
    document = json.loads((tmp_path / "w2.json").read_text())
    assert document["num_failed"] == 2
    for run in document["scenarios"][0]["runs"]:
        assert (run["num_requests"], run["num_failed"], run["num_tokens"]) == (3, 1, 4)
        assert run["errors"] == ["HTTP 422: no"]


def test_run_bench_stops_when_the_warm_up_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(503, text="loading"))
    options = BenchOptions(URL, "w1", 1, output=tmp_path)

    assert run_bench(options, transport) == 1

    assert (
        "warm-up request to http://bench.test failed: HTTP 503: loading" in capsys.readouterr().err
    )
    assert list(tmp_path.iterdir()) == []


def test_run_bench_without_matplotlib_still_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(command, "plots_available", lambda: False)
    options = BenchOptions(URL, "w3", 1, max_new_tokens=3, num_prompts=2, output=tmp_path)

    assert run_bench(options, fake_tgi()) == 0

    assert "matplotlib is not installed" in capsys.readouterr().err
    assert [path.name for path in tmp_path.iterdir()] == ["w3.json"]
    (run,) = json.loads((tmp_path / "w3.json").read_text())["scenarios"][0]["runs"]
    assert run["num_tokens"] == 6
    assert run["decode_tokens_per_s"] > 0
