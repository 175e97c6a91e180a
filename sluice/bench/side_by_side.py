"""Two servers measured side by side in one run: both start fresh, each workload goes to one and
then the other, the first in turn from run to run, so that a shared host's drift weighs on both
alike. W1 (one stream) and W2 (64 requests at once) over HTTP, and each server's time from
start to healthy."""

import json
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from sluice.bench.client import RequestFn, run_workload_blocking, stream_request
from sluice.bench.local_server import local_server
from sluice.bench.stats import SingleStreamRun, Spread, ThroughputRun
from sluice.bench.workloads import Workload, load_workload

Figures = dict[str, float]
"""One server's figures in one run, by the keys of MEASURES."""
MEASURES = (
    ("W1 decode tokens/s", "w1_decode_tokens_per_s", 1),
    ("W1 time to first token, s", "w1_ttft_s", 3),
    ("W2 output tokens/s", "w2_output_tokens_per_s", 1),
    ("W2 time to first token p50, s", "w2_ttft_p50_s", 2),
    ("start to healthy, s", "start_to_healthy_s", 1),
)
"""(label, key, digits) of each figure."""


def measure_side_by_side(
    servers: Mapping[str, Sequence[str]], run_index: int
) -> dict[str, Figures]:
    """`servers`: two labels, each with its `sluice serve` flags. Returns each label's figures."""
    labels = list(servers)
    if len(labels) != 2:
        raise ValueError(f"two servers are compared, got {labels}")
    startup: dict[str, float] = {}
    urls = {}
    with ExitStack() as stack:
        for label in labels:  # the second starts beside the first, as it runs the warm-up
            started = time.monotonic()
            urls[label] = stack.enter_context(local_server(*servers[label]))
            startup[label] = time.monotonic() - started
        figures = measure_workloads(urls, run_index)
    for label in labels:
        figures[label]["start_to_healthy_s"] = startup[label]
    return figures


def measure_workloads(
    urls: Mapping[str, str],
    run_index: int,
    *,
    request: RequestFn = stream_request,
    before_each: Callable[[], object] = lambda: None,
) -> dict[str, Figures]:
    """A warm-up, W1 and W2 on each running server in turn, the first alternating with
    `run_index`; `before_each` runs before every measurement (waiting for an idle host, say)."""
    labels = list(urls)
    figures: dict[str, Figures] = {label: {} for label in labels}
    w1, w2 = load_workload("w1"), load_workload("w2")
    for turn, (name, workload, concurrency) in enumerate(
        (
            ("warm-up", Workload("warm-up", ("Hello",), 8), 1),
            ("w1", w1, 1),
            ("w2", w2, len(w2.prompts)),
        )
    ):
        order = labels if (run_index + turn) % 2 == 0 else labels[::-1]
        for label in order:
            before_each()
            timings = run_workload_blocking(
                urls[label], workload.prompts, workload.max_new_tokens, concurrency, request=request
            )
            if timings.errors:
                raise SystemExit(f"{label} {name}: requests failed: {timings.errors[:3]}")
            if name == "w1":
                single = SingleStreamRun.of(timings)
                figures[label]["w1_decode_tokens_per_s"] = single.decode_tokens_per_s
                figures[label]["w1_ttft_s"] = single.ttft_s
            elif name == "w2":
                throughput = ThroughputRun.of(timings)
                figures[label]["w2_output_tokens_per_s"] = throughput.output_tokens_per_s
                figures[label]["w2_ttft_p50_s"] = throughput.ttft_p50_s
    return figures


def render_table(runs: Sequence[Mapping[str, Figures]], baseline: str, other: str) -> list[str]:
    """Markdown rows: each measure's median (min-max) for both, and their ratio other/baseline;
    a measure the runs did not take (a start-up that was not timed) has no row."""
    lines = [
        f"| measure | {baseline} | {other} | {other} / {baseline} |",
        "|---|---|---|---|",
    ]
    for label, key, digits in MEASURES:
        if key not in runs[0][baseline]:
            continue
        base = [run[baseline][key] for run in runs]
        values = [run[other][key] for run in runs]
        ratios = [b / a for a, b in zip(base, values, strict=True)]
        lines.append(
            f"| {label} | {Spread.of(base).format(digits)} | "
            f"{Spread.of(values).format(digits)} | {Spread.of(ratios).format(2)} |"
        )
    return lines


def report_lines(
    title: str, setting: str, results: Mapping[str, Any], baseline: str, other: str
) -> list[str]:
    """A comparison's markdown: `title`, the commit, machine and `setting`, and the table of
    `results["runs"]` (as `run_side_by_side` returns them)."""
    runs = results["runs"]
    return [
        f"# {title}",
        "",
        f"Commit {results['commit']}, {results['machine']}; {setting}. {len(runs)} runs, each "
        "on two fresh servers side by side (each workload goes to both in turn, the first "
        "alternating); median (min-max).",
        "",
        *render_table(runs, baseline, other),
        "",
    ]


def run_side_by_side(
    servers: Mapping[str, Sequence[str]], num_runs: int
) -> list[dict[str, Figures]]:
    """`measure_side_by_side` `num_runs` times, each run's figures printed as it ends."""
    runs = []
    for index in range(num_runs):
        runs.append(measure_side_by_side(servers, index))
        print(json.dumps(runs[-1]), flush=True)
    return runs


def write_results(output: Path, name: str, results: dict[str, Any], lines: list[str]) -> None:
    """`output/name.json` (the figures) and `output/name.md` (the table); the table printed."""
    output.mkdir(parents=True, exist_ok=True)
    (output / f"{name}.json").write_text(json.dumps(results, indent=2))
    (output / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
