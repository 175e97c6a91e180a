"""PNG plots of `sluice bench` results: throughput and latency against concurrency (the sweep)
and latency distributions as CDFs. matplotlib is an optional extra (`sluice[bench]`), imported
only here and only when plotting; figures render through Agg without touching pyplot's state."""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sluice.bench.scenarios import ScenarioResult
from sluice.bench.stats import Spread

if TYPE_CHECKING:  # matplotlib is optional: annotations only
    from matplotlib.axes import Axes

PNG_DPI = 120


def plots_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def plot_throughput(results: Sequence[ScenarioResult], path: Path) -> None:
    """Output tokens/s and request latency against concurrency: medians, min-max error bars."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.5), layout="constrained")
    throughput_axes, latency_axes = figure.subplots(1, 2)
    concurrency = [result.scenario.concurrency for result in results]
    summaries = [result.summary() for result in results]
    _plot_spreads(
        throughput_axes, concurrency, [s["output_tokens_per_s"] for s in summaries], "output"
    )
    throughput_axes.set_ylabel("output tokens/s")
    for name, label in (
        ("latency_p50_s", "end-to-end p50"),
        ("latency_p99_s", "end-to-end p99"),
        ("ttft_p50_s", "TTFT p50"),
        ("ttft_p99_s", "TTFT p99"),
    ):
        _plot_spreads(latency_axes, concurrency, [s[name] for s in summaries], label)
    latency_axes.set_ylabel("seconds")
    latency_axes.legend()
    for axes in (throughput_axes, latency_axes):
        axes.set_xscale("log", base=2)
        axes.set_xticks(concurrency, [str(c) for c in concurrency])
        axes.set_xlabel("concurrent requests")
        axes.grid(True, alpha=0.3)
    figure.suptitle("Throughput and latency against concurrency (median, min-max over runs)")
    figure.savefig(path, dpi=PNG_DPI)


def _plot_spreads(
    axes: "Axes", xs: Sequence[int], spreads: Sequence[Spread | None], label: str
) -> None:
    points = [(x, spread) for x, spread in zip(xs, spreads, strict=True) if spread is not None]
    if not points:
        return
    medians = [spread.median for _, spread in points]
    below = [spread.median - spread.min for _, spread in points]
    above = [spread.max - spread.median for _, spread in points]
    xs_defined = [x for x, _ in points]
    axes.errorbar(xs_defined, medians, yerr=[below, above], marker="o", capsize=3, label=label)


def plot_latency_distributions(results: Sequence[ScenarioResult], path: Path) -> None:
    """Empirical CDFs of TTFT, inter-token latency and end-to-end latency, one line per scenario
    (all runs pooled)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(14, 4.5), layout="constrained")
    ttft_axes, itl_axes, e2e_axes = figure.subplots(1, 3)
    for result in results:
        samples = result.samples
        label = result.scenario.name
        if samples.ttft_s:
            ttft_axes.ecdf(samples.ttft_s, label=label)
            e2e_axes.ecdf(samples.e2e_s, label=label)
        if samples.itl_s:
            itl_axes.ecdf([gap * 1000 for gap in samples.itl_s], label=label)
    ttft_axes.set_xlabel("time to first token (s)")
    itl_axes.set_xlabel("inter-token latency (ms)")
    e2e_axes.set_xlabel("end-to-end latency (s)")
    for axes in (ttft_axes, itl_axes, e2e_axes):
        axes.set_ylabel("fraction of samples")
        axes.grid(True, alpha=0.3)
        if axes.has_data():
            axes.legend()
    figure.suptitle("Latency distributions (completed requests, all runs)")
    figure.savefig(path, dpi=PNG_DPI)
