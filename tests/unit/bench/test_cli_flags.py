"""`sluice bench` flags reach run_bench as BenchOptions; bad values stop at parsing."""

from pathlib import Path

import pytest

from sluice import cli
from sluice.bench import command
from sluice.bench.command import BenchOptions
from sluice.bench.workloads import DEFAULT_CONCURRENCY


@pytest.fixture
def options(monkeypatch: pytest.MonkeyPatch) -> list[BenchOptions]:
    """What `sluice bench` would have run, instead of running it."""
    received: list[BenchOptions] = []

    def fake_run_bench(options: BenchOptions) -> int:
        received.append(options)
        return 0

    monkeypatch.setattr(command, "run_bench", fake_run_bench)
    return received


def test_bench_defaults(options: list[BenchOptions]) -> None:
    assert cli.main(["bench", "--workload", "w2"]) == 0

    assert options == [BenchOptions("http://127.0.0.1:3000", "w2")]
    assert options[0].runs == 3
    assert options[0].concurrency_levels == DEFAULT_CONCURRENCY
    assert options[0].ignore_eos


def test_bench_flags_fill_the_options(options: list[BenchOptions]) -> None:
    argv = ["bench", "--url", "http://host:8080/", "--workload", "sweep", "--runs", "5"]
    argv += ["--concurrency", "2,8", "--max-new-tokens", "16", "--num-prompts", "10"]
    argv += ["--output", "results", "--no-ignore-eos"]

    assert cli.main(argv) == 0

    assert options == [
        BenchOptions(
            url="http://host:8080",
            workload="sweep",
            runs=5,
            concurrency_levels=(2, 8),
            max_new_tokens=16,
            num_prompts=10,
            output=Path("results"),
            ignore_eos=False,
        )
    ]


@pytest.mark.parametrize(
    "flags",
    [
        ["--workload", "w4"],
        ["--runs", "1"],  # --workload is required
        ["--workload", "sweep", "--concurrency", "1,x"],
        ["--workload", "sweep", "--concurrency", "0,4"],
        ["--workload", "w1", "--runs", "0"],
        ["--workload", "w1", "--max-new-tokens", "-1"],
    ],
)
def test_bench_rejects_bad_flags(flags: list[str], options: list[BenchOptions]) -> None:
    with pytest.raises(SystemExit) as raised:
        cli.main(["bench", *flags])

    assert raised.value.code == 2
    assert options == []


def test_bench_concurrency_needs_the_sweep(
    options: list[BenchOptions], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["bench", "--workload", "w2", "--concurrency", "4"]) == 2

    assert "`--concurrency` applies to `--workload sweep` only" in capsys.readouterr().err
    assert options == []
