"""The soak benchmark's report (bench/soak.py): verdicts against the targets, outcomes per
kind of request, the drain after each minute's burst, every sample, and a plot of the samples."""

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from soak_traffic import Outcome, Result

RSS_FROM_S = 120
"""Memory growth is measured from the 2nd minute (the first fills caches and arenas)."""


@dataclass(frozen=True, slots=True)
class Sample:
    at_s: float
    rss_mib: float
    open_fds: int
    kv_blocks_used: float
    queue_size: float


@dataclass(frozen=True, slots=True)
class Drain:
    minute: int
    burst: Counter[Outcome]
    kv_blocks_used: float
    seconds_to_baseline: float | None
    """None: the blocks never came back (bench/soak.py waits DRAIN_TIMEOUT_S)."""


@dataclass(slots=True)
class Soak:
    kv_baseline: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    drains: list[Drain] = field(default_factory=list)
    outcomes: dict[str, Counter[Outcome]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    error_events: Counter[str] = field(default_factory=Counter)

    def record(self, kind: str, result: Result) -> None:
        self.outcomes.setdefault(kind, Counter())[result.outcome] += 1
        if result.outcome is Outcome.FAILED:
            self.failures.append(f"{kind}: {result.detail}")
        elif result.outcome is Outcome.ERROR_EVENT:
            self.error_events[f"{kind}: {result.detail}"] += 1


def write_report(soak: Soak, header: str, markdown: Path, plot: Path) -> None:
    markdown.write_text(_document(soak, header))
    _plot(soak.samples, soak.kv_baseline, plot)
    print(f"wrote {markdown} and {plot}")


def _document(soak: Soak, header: str) -> str:
    lines = ["# Soak: mixed traffic on one server", "", header, "", "## Targets", ""]
    lines += [f"- {verdict}" for verdict in _verdicts(soak)]
    outcomes = list(Outcome)
    lines += ["", "## Requests by kind and outcome", ""]
    lines += ["| request | " + " | ".join(o.value for o in outcomes) + " |"]
    lines += ["|---" * (len(outcomes) + 1) + "|"]
    for kind, counts in sorted(soak.outcomes.items()):
        lines.append(f"| {kind} | " + " | ".join(str(counts[o]) for o in outcomes) + " |")
    lines += ["", "## After each minute's burst", ""]
    lines += [
        "| minute | burst answered | burst refused (429) | KV blocks after the drain | "
        "back at the baseline after |",
        "|---|---|---|---|---|",
    ]
    for drain in soak.drains:
        back = (
            "never" if drain.seconds_to_baseline is None else f"{drain.seconds_to_baseline:.1f} s"
        )
        lines.append(
            f"| {drain.minute} | {drain.burst[Outcome.ANSWERED]} | {drain.burst[Outcome.REFUSED]} "
            f"| {drain.kv_blocks_used:.0f} (baseline {soak.kv_baseline:.0f}) | {back} |"
        )
    lines += [
        "",
        "## Samples",
        "",
        "| at (s) | RSS (MiB) | open fds | KV blocks used | queue |",
        "|---|---|---|---|---|",
    ]
    for sample in soak.samples:
        lines.append(
            f"| {sample.at_s:.0f} | {sample.rss_mib:.1f} | {sample.open_fds} | "
            f"{sample.kv_blocks_used:.0f} | {sample.queue_size:.0f} |"
        )
    if soak.error_events:
        lines += ["", "## Error events", ""]
        lines += [f"- {count} x {event}" for event, count in soak.error_events.most_common()]
    if soak.failures:
        lines += ["", "## Failures (first 20)", ""] + [f"- {f}" for f in soak.failures[:20]]
    return "\n".join(lines) + "\n"


def _verdicts(soak: Soak) -> list[str]:
    total = sum(sum(counts.values()) for counts in soak.outcomes.values())
    server_errors = sum(1 for failure in soak.failures if failure.split(": ", 1)[1][:1] == "5")
    drained = sum(1 for drain in soak.drains if drain.seconds_to_baseline is not None)
    later = [s for s in soak.samples if s.at_s >= RSS_FROM_S]
    verdicts = [
        f"{total} requests; 5xx answers: {server_errors} (target 0)",
        f"accepted requests lost or failed: {len(soak.failures)} (target 0)",
        f"KV blocks back at the baseline ({soak.kv_baseline:.0f}) after {drained} of "
        f"{len(soak.drains)} bursts (target: all)",
    ]
    if len(later) >= 2:
        first, last = later[0], later[-1]
        growth = 100 * (last.rss_mib / first.rss_mib - 1)
        verdicts.append(
            f"resident memory {first.rss_mib:.0f} MiB at {first.at_s:.0f} s, "
            f"{last.rss_mib:.0f} MiB at {last.at_s:.0f} s: {growth:+.1f}% (target < 5%)"
        )
    return verdicts


def _plot(samples: list[Sample], kv_baseline: float, path: Path) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 9), layout="constrained")
    axes = figure.subplots(4, 1, sharex=True)
    minutes = [s.at_s / 60 for s in samples]
    series = (
        ("resident memory (MiB)", [s.rss_mib for s in samples]),
        ("open file descriptors", [s.open_fds for s in samples]),
        ("KV blocks in use", [s.kv_blocks_used for s in samples]),
        ("queue size", [s.queue_size for s in samples]),
    )
    for ax, (label, values) in zip(axes, series, strict=True):
        ax.plot(minutes, values, marker=".")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[2].axhline(kv_baseline, color="grey", linestyle="--", label="baseline")
    axes[2].legend(loc="upper right")
    axes[0].set_ylim(bottom=0)
    axes[-1].set_xlabel("minutes")
    figure.suptitle("Soak: the server's resources, sampled every 10 s")
    figure.savefig(path, dpi=100)
