"""The table shows median (min-max) over runs and the failed requests; the JSON document holds
every run's figures, failures and the summaries, and stays valid JSON when a figure is NaN."""

import json
from pathlib import Path

import pytest

from sluice.bench.client import RunTimings
from sluice.bench.report import format_table, results_document, write_json
from sluice.bench.scenarios import ScenarioResult, build_scenarios
from tests.unit.bench.timings import run, timing


def _sweep_result(concurrency: int, runs: list[RunTimings]) -> ScenarioResult:
    (scenario,) = build_scenarios("sweep", (concurrency,), num_prompts=2, max_new_tokens=3)
    return ScenarioResult(scenario, tuple(runs))


def _two_request_run(wall_s: float) -> RunTimings:
    return run(timing([0.1, 0.2, 0.3]), timing([0.2, 0.3, 0.4]), wall_s=wall_s)


def test_table_shows_median_min_max_and_failures() -> None:
    results = [
        _sweep_result(1, [_two_request_run(1.0), _two_request_run(2.0), _two_request_run(3.0)]),
        _sweep_result(2, [run(timing([0.1, 0.2, 0.3]), timing([], error="HTTP 500: x"))]),
    ]

    table = format_table(results)

    lines = table.splitlines()
    assert [cell.strip() for cell in lines[0].split("|")[1:-1]] == ["figure", "c=1", "c=2"]
    assert "| wall s " in table
    assert "2.00 (1.00-3.00)" in table  # wall time over the three runs
    assert "3.0 (2.0-6.0)" in table  # output tokens/s: 6 tokens over 3, 2 and 1 s
    assert "| latency p50 ms " in table
    assert "| TTFT p99 ms " in table
    failed_row = next(line for line in lines if line.startswith("| failed requests"))
    assert "0 of 6" in failed_row
    assert "1 of 2" in failed_row


def test_json_document_holds_every_run_and_the_summary(tmp_path: Path) -> None:
    all_failed = run(timing([], error="HTTP 422: too long"), wall_s=0.5)
    results = [_sweep_result(1, [_two_request_run(1.0), all_failed])]
    path = tmp_path / "sweep.json"

    write_json(path, results_document(results, {"url": "http://x", "workload": "sweep"}))

    document = json.loads(path.read_text())
    assert (document["url"], document["workload"], document["num_failed"]) == (
        "http://x",
        "sweep",
        1,
    )
    (scenario,) = document["scenarios"]
    assert (scenario["name"], scenario["concurrency"], scenario["num_prompts"]) == ("c=1", 1, 2)
    assert scenario["max_new_tokens"] == 3
    first, second = scenario["runs"]
    assert (first["num_tokens"], first["num_failed"], first["errors"]) == (6, 0, [])
    assert first["output_tokens_per_s"] == pytest.approx(6.0)
    assert second["num_failed"] == 1
    assert second["errors"] == ["HTTP 422: too long"]
    assert second["latency_p50_s"] is None  # NaN becomes null
    summary = scenario["summary"]
    assert summary["latency_p50_s"]["median"] == pytest.approx(0.3)  # only the defined run
    assert summary["num_tokens"] == {"median": 3.0, "min": 0, "max": 6}
