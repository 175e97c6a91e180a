"""The results of `sluice bench` for people (a table of median (min-max) over runs) and for
machines (one JSON document with every run's figures, its failures and the summaries)."""

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from sluice.bench.scenarios import ScenarioResult
from sluice.bench.stats import Spread


def format_table(results: Sequence[ScenarioResult]) -> str:
    """A markdown table: one row per figure, one column per scenario."""
    summaries = [result.summary() for result in results]
    header = ["figure", *(result.scenario.name for result in results)]
    rows = [header]
    for name in summaries[0]:
        label, scale, digits = _display(name)
        rows.append([label, *(_cell(spreads[name], scale, digits) for spreads in summaries)])
    rows.append(["failed requests", *(_failed_cell(result) for result in results)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [_table_line(row, widths) for row in rows]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def _table_line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"


def _display(name: str) -> tuple[str, float, int]:
    """Row label, scale and digits of a figure: latencies in ms, wall time in s."""
    if name == "wall_s":
        return "wall s", 1, 2
    if name == "num_tokens":
        return "output tokens", 1, 0
    label = name.replace("ttft", "TTFT").replace("itl", "ITL").replace("_per_s", "/s")
    if name.endswith("_s") and not name.endswith("_per_s"):
        return label.removesuffix("_s").replace("_", " ") + " ms", 1000, 1
    return label.replace("_", " "), 1, 1


def _cell(spread: Spread | None, scale: float, digits: int) -> str:
    if spread is None:
        return "n/a"
    return Spread(spread.median * scale, spread.min * scale, spread.max * scale).format(digits)


def _failed_cell(result: ScenarioResult) -> str:
    num_requests = sum(len(run.timings) for run in result.runs)
    return f"{result.num_failed} of {num_requests}"


def results_document(
    results: Sequence[ScenarioResult], meta: Mapping[str, object]
) -> dict[str, object]:
    """`meta` (url, workload, server info...) plus every scenario's runs and summary."""
    return {
        **meta,
        "num_failed": sum(result.num_failed for result in results),
        "scenarios": [_scenario_document(result) for result in results],
    }


def _scenario_document(result: ScenarioResult) -> dict[str, object]:
    runs = [
        {
            **_finite(dataclasses.asdict(figures)),
            "num_requests": len(run.timings),
            "num_failed": len(run.errors),
            "errors": run.errors,
        }
        for run, figures in zip(result.runs, result.figures, strict=True)
    ]
    return {
        "name": result.scenario.name,
        "concurrency": result.scenario.concurrency,
        "num_prompts": len(result.scenario.workload.prompts),
        "max_new_tokens": result.scenario.workload.max_new_tokens,
        "runs": runs,
        "summary": {
            name: None if spread is None else dataclasses.asdict(spread)
            for name, spread in result.summary().items()
        },
    }


def _finite(figures: Mapping[str, float]) -> dict[str, float | None]:
    """JSON has no NaN: an undefined figure is null."""
    return {name: value if math.isfinite(value) else None for name, value in figures.items()}


def write_json(path: Path, document: Mapping[str, object]) -> None:
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
