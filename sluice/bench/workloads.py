"""The benchmark workloads of shared/bench/WORKLOADS.md, read from their JSON files."""

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    prompts: tuple[str, ...]
    max_new_tokens: int


def load_workload(name: str, path: Path) -> Workload:
    """`w1` and `w2` from workloads.json; `w3` from w3.json."""
    data = json.loads(path.read_text())
    entries = data[name]
    if isinstance(entries, dict):
        entries = [entries]
    prompts = tuple(entry["text"] for entry in entries)
    return Workload(name=name, prompts=prompts, max_new_tokens=int(data["max_new_tokens"]))
