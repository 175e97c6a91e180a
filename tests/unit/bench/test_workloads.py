"""The workloads ship inside the package; a file path still works (bench/w1_w2_baseline.py)."""

import json
from pathlib import Path

from sluice.bench.scenarios import build_scenarios
from sluice.bench.stats import SingleStreamRun, ThroughputRun
from sluice.bench.workloads import load_workload


def test_load_workload_from_package_data() -> None:
    w1, w2, w3 = load_workload("w1"), load_workload("w2"), load_workload("w3")

    assert len(w1.prompts) == 1
    assert len(w2.prompts) == 64
    assert len(set(w2.prompts)) == 64
    assert len(w3.prompts) == 8
    assert {w1.max_new_tokens, w2.max_new_tokens, w3.max_new_tokens} == {128}
    assert w1.prompts[0].startswith("<|im_start|>")
    assert "renaming the variable" in w3.prompts[0]


def test_load_workload_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"max_new_tokens": 7, "w2": [{"text": "a"}, {"text": "b"}]}))

    workload = load_workload("w2", path)

    assert (workload.prompts, workload.max_new_tokens) == (("a", "b"), 7)


def test_limited_takes_the_first_prompts_and_overrides_tokens() -> None:
    w2 = load_workload("w2")

    limited = w2.limited(3, 4)

    assert limited.prompts == w2.prompts[:3]
    assert limited.max_new_tokens == 4
    assert w2.limited(None, None) == w2


def test_build_scenarios_per_workload() -> None:
    (w1,) = build_scenarios("w1")
    (w2,) = build_scenarios("w2", num_prompts=5)
    sweep = build_scenarios("sweep", (1, 8), num_prompts=10, max_new_tokens=4)

    assert (w1.concurrency, w1.figures) == (1, SingleStreamRun)
    assert (w2.concurrency, len(w2.workload.prompts), w2.figures) == (5, 5, ThroughputRun)
    assert [s.name for s in sweep] == ["c=1", "c=8"]
    assert [s.concurrency for s in sweep] == [1, 8]
    assert all(s.workload.max_new_tokens == 4 and s.figures is ThroughputRun for s in sweep)
