"""`sluice bench`: runs one workload against a TGI-compatible URL, prints a table of median
(min-max) over runs, writes the JSON and PNG plots, and exits 1 when any request failed."""

import datetime
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from sluice.bench.plots import plot_latency_distributions, plot_throughput, plots_available
from sluice.bench.report import format_table, results_document, write_json
from sluice.bench.runner import WarmUpError, run_benchmark
from sluice.bench.scenarios import ScenarioResult, build_scenarios
from sluice.bench.workloads import DEFAULT_CONCURRENCY

MAX_ERRORS_SHOWN = 5


@dataclass(frozen=True, slots=True)
class BenchOptions:
    url: str
    workload: str
    """w1, w2, w3 or sweep."""
    runs: int = 3
    concurrency_levels: tuple[int, ...] = DEFAULT_CONCURRENCY
    max_new_tokens: int | None = None
    """Overrides the workload's 128."""
    num_prompts: int | None = None
    """Use only the first N prompts."""
    output: Path | None = None
    """Directory for the JSON document and the PNGs; nothing is written without it."""
    ignore_eos: bool = True


def run_bench(options: BenchOptions, transport: httpx.AsyncBaseTransport | None = None) -> int:
    """Returns the exit status. `transport` replaces the network (tests pass a fake server)."""
    scenarios = build_scenarios(
        options.workload, options.concurrency_levels, options.num_prompts, options.max_new_tokens
    )
    started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    try:
        benchmark = run_benchmark(
            options.url, scenarios, options.runs, ignore_eos=options.ignore_eos, transport=transport
        )
    except WarmUpError as error:
        print(f"sluice bench: error: {error}", file=sys.stderr)
        return 1
    model_id = (benchmark.server_info or {}).get("model_id", "unknown model")
    print(
        f"\n{options.workload} against {options.url} ({model_id}), {options.runs} run(s), "
        "median (min-max) over runs:\n"
    )
    print(format_table(benchmark.results))
    if options.output is not None:
        meta = {
            "url": options.url,
            "workload": options.workload,
            "runs": options.runs,
            "ignore_eos": options.ignore_eos,
            "started_at": started_at,
            "server_info": benchmark.server_info,
        }
        _write_outputs(options.output, options.workload, benchmark.results, meta)
    return _report_failures(benchmark.results)


def _write_outputs(
    directory: Path, workload: str, results: Sequence[ScenarioResult], meta: dict[str, object]
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / f"{workload}.json"
    write_json(json_path, results_document(results, meta))
    print(f"\nwrote {json_path}")
    if not plots_available():
        print(
            "matplotlib is not installed, so no plots were drawn "
            "(install it with `pip install 'sluice[bench]'`)",
            file=sys.stderr,
        )
        return
    plot_latency_distributions(results, directory / f"{workload}_latency.png")
    print(f"wrote {directory / f'{workload}_latency.png'}")
    if workload == "sweep":
        plot_throughput(results, directory / "sweep_throughput.png")
        print(f"wrote {directory / 'sweep_throughput.png'}")


def _report_failures(results: Sequence[ScenarioResult]) -> int:
    errors = [error for result in results for run in result.runs for error in run.errors]
    if not errors:
        return 0
    print(f"\n{len(errors)} request(s) failed. First errors:", file=sys.stderr)
    for error in errors[:MAX_ERRORS_SHOWN]:
        print(f"  {error}", file=sys.stderr)
    return 1
