"""The benchmark workloads of shared/bench/WORKLOADS.md. Their JSON files ship inside the package
(sluice/bench/data/) so `sluice bench` works from a plain install."""

import dataclasses
import json
from importlib import resources
from pathlib import Path

WORKLOAD_FILES = {"w1": "workloads.json", "w2": "workloads.json", "w3": "w3.json"}
"""Which packaged file holds each workload."""
WORKLOAD_CHOICES = ("w1", "w2", "w3", "sweep")
"""What `sluice bench --workload` runs: a workload, or `sweep` (W2's prompts at several
concurrencies)."""
DEFAULT_CONCURRENCY = (1, 4, 16, 64)
"""The sweep's concurrency levels unless `--concurrency` says otherwise."""


@dataclasses.dataclass(frozen=True, slots=True)
class Workload:
    name: str
    prompts: tuple[str, ...]
    max_new_tokens: int

    def limited(self, num_prompts: int | None, max_new_tokens: int | None) -> "Workload":
        """The first `num_prompts` prompts (all if None), with `max_new_tokens` if given."""
        return dataclasses.replace(
            self,
            prompts=self.prompts[:num_prompts],
            max_new_tokens=self.max_new_tokens if max_new_tokens is None else max_new_tokens,
        )


def load_workload(name: str, path: Path | None = None) -> Workload:
    """`w1` and `w2` from workloads.json; `w3` from w3.json. Without `path`, the packaged copy."""
    if path is None:
        text = (resources.files("sluice.bench") / "data" / WORKLOAD_FILES[name]).read_text()
    else:
        text = path.read_text()
    data = json.loads(text)
    entries = data[name]
    if isinstance(entries, dict):
        entries = [entries]
    prompts = tuple(entry["text"] for entry in entries)
    return Workload(name=name, prompts=prompts, max_new_tokens=int(data["max_new_tokens"]))
