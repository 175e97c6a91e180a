"""The plots are written as real PNG files, also when some figures are undefined."""

from pathlib import Path

from sluice.bench.plots import plot_latency_distributions, plot_throughput, plots_available
from sluice.bench.scenarios import ScenarioResult, build_scenarios
from tests.unit.bench.timings import run, timing

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _sweep_results() -> list[ScenarioResult]:
    scenarios = build_scenarios("sweep", (1, 2, 4), num_prompts=2, max_new_tokens=3)
    results = []
    for index, scenario in enumerate(scenarios[:2]):
        runs = [
            run(timing([0.1, 0.2, 0.3]), timing([0.2, 0.35, 0.5]), wall_s=0.5 + index + r)
            for r in range(2)
        ]
        results.append(ScenarioResult(scenario, tuple(runs)))
    failed = run(timing([], error="HTTP 500: x"), timing([], error="HTTP 500: x"))
    results.append(ScenarioResult(scenarios[2], (failed,)))  # nothing to plot at c=4
    return results


def test_plots_are_available_in_the_test_environment() -> None:
    assert plots_available()  # matplotlib is in the `test` extra


def test_plots_write_png_files(tmp_path: Path) -> None:
    throughput_path = tmp_path / "sweep_throughput.png"
    latency_path = tmp_path / "sweep_latency.png"

    plot_throughput(_sweep_results(), throughput_path)
    plot_latency_distributions(_sweep_results(), latency_path)

    for path in (throughput_path, latency_path):
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        assert len(data) > 10_000  # axes, lines and labels, not an empty canvas
