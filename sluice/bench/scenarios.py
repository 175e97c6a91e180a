"""What each `--workload` measures, as scenarios: one workload sent at one concurrency and
summarized by one kind of figures. W1 and W3 run one request at a time, W2 sends every prompt at
t=0, and the sweep runs W2's prompts at each concurrency in turn."""

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from sluice.bench.client import RunTimings
from sluice.bench.stats import Figures, LatencySamples, SingleStreamRun, Spread, ThroughputRun
from sluice.bench.workloads import DEFAULT_CONCURRENCY, Workload, load_workload


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    """`w1`, `w2`, `w3`, or `c=<concurrency>` in a sweep."""
    workload: Workload
    concurrency: int
    """Requests kept in flight (closed loop)."""
    figures: type[SingleStreamRun] | type[ThroughputRun]


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    scenario: Scenario
    runs: tuple[RunTimings, ...]

    @property
    def figures(self) -> list[Figures]:
        return [self.scenario.figures.of(run) for run in self.runs]

    @property
    def num_failed(self) -> int:
        return sum(len(run.errors) for run in self.runs)

    @property
    def samples(self) -> LatencySamples:
        """Latencies of every completed request, pooled over the runs."""
        return LatencySamples.of(timing for run in self.runs for timing in run.timings)

    def summary(self) -> dict[str, Spread | None]:
        """Each figure's median (min, max) over the runs where it is defined; None where it
        never is (every request failed, or none got past its first token)."""
        per_run = [dataclasses.asdict(figures) for figures in self.figures]
        spreads: dict[str, Spread | None] = {}
        for field in dataclasses.fields(self.scenario.figures):
            values = [run[field.name] for run in per_run if math.isfinite(run[field.name])]
            spreads[field.name] = Spread.of(values) if values else None
        return spreads


def build_scenarios(
    workload: str,
    concurrency_levels: Sequence[int] = DEFAULT_CONCURRENCY,
    num_prompts: int | None = None,
    max_new_tokens: int | None = None,
) -> list[Scenario]:
    """The scenarios of one `--workload`; `concurrency_levels` matter to the sweep only."""
    if workload == "sweep":
        w2 = load_workload("w2").limited(num_prompts, max_new_tokens)
        return [Scenario(f"c={c}", w2, c, ThroughputRun) for c in concurrency_levels]
    loaded = load_workload(workload).limited(num_prompts, max_new_tokens)
    if workload == "w2":
        return [Scenario("w2", loaded, len(loaded.prompts), ThroughputRun)]
    return [Scenario(workload, loaded, 1, SingleStreamRun)]
