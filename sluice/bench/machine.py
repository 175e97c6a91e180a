"""The machine a benchmark runs on: which CPU, and its memory bandwidth and matmul rates,
measured where the benchmark runs (machines of one kind differ: never assume another's figures).

Every committed result names its CPU with `cpu_description()`; floors use `measure_rates()`."""

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from sluice.cpu import cpu_flags, cpuinfo_field, has_native_bf16

CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")
"""The flags that decide which kernels torch and oneDNN take for float32, bf16 and int8."""
BANDWIDTH_BYTES = 256 << 20
"""Far beyond any cache, so copies and sums stream from memory."""
GEMM_SIZE = 2048


def cpu_model() -> str:
    return cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_features() -> dict[str, bool]:
    flags = cpu_flags()
    return {feature: feature in flags for feature in CPU_FEATURES}


def cpu_description() -> str:
    """The CPU's model, its family and model numbers where the name is vague (a virtual
    machine's "AMD EPYC" is any of several generations), and its matmul-relevant flags."""
    features = ", ".join(
        name if present else f"no {name}" for name, present in cpu_features().items()
    )
    family, model = cpuinfo_field("cpu family"), cpuinfo_field("model")
    numbers = f" (family {family}, model {model})" if family else ""
    threads = torch.get_num_threads()
    return f"{cpu_model()}{numbers}, {platform.machine()}; {features}; {threads} torch threads"


def cpu_kind() -> str:
    """A short name for the kind of CPU, as far as sluice's kernels care, for result file
    names: native_bf16, avx512_no_bf16 or no_avx512."""
    if has_native_bf16():
        return "native_bf16"
    return "avx512_no_bf16" if "avx512f" in cpu_flags() else "no_avx512"


@dataclass(frozen=True, slots=True)
class MachineRates:
    copy_bytes_per_s: float
    """Bytes read plus bytes written per second by a large copy."""
    read_bytes_per_s: float
    """Bytes read per second by a large sum."""
    gemm_flops_per_s: dict[str, float]
    """Per dtype name: a 2048-square matmul's rate."""


def measure_rates(dtypes: tuple[torch.dtype, ...], *, repeats: int = 5) -> MachineRates:
    """The medians of `repeats` timings of each measure, on this machine, now."""
    source = torch.ones(BANDWIDTH_BYTES // 4)
    target = torch.empty_like(source)
    copy_s = _median_seconds(lambda: target.copy_(source), repeats)
    read_s = _median_seconds(lambda: source.sum(), repeats)
    gemm = {}
    for dtype in dtypes:
        a = torch.randn(GEMM_SIZE, GEMM_SIZE).to(dtype)
        b = torch.randn(GEMM_SIZE, GEMM_SIZE).to(dtype)
        seconds = _median_seconds(lambda a=a, b=b: torch.mm(a, b), repeats)
        gemm[str(dtype).removeprefix("torch.")] = 2 * GEMM_SIZE**3 / seconds
    return MachineRates(2 * BANDWIDTH_BYTES / copy_s, BANDWIDTH_BYTES / read_s, gemm)


def _median_seconds(work: Callable[[], object], repeats: int) -> float:
    work()  # first-call costs: page faults, kernel selection
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


IDLE_BUSY_FRACTION = 0.1
MAX_SETTLE_S = 60
"""Before each measurement the host must be idle (vLLM's worker threads keep a core busy for
a while after a load; measured right after, sluice's W2 fell from 420 to 265 tokens/s)."""


def wait_until_idle() -> float:
    """Block until the CPUs were at most `IDLE_BUSY_FRACTION` busy over half a second (or
    `MAX_SETTLE_S` passed); returns the seconds waited."""
    started = time.monotonic()

    def busy_and_total() -> tuple[int, int]:
        fields = [int(value) for value in Path("/proc/stat").read_text().split()[1:9]]
        idle = fields[3] + fields[4]  # idle and iowait
        return sum(fields) - idle, sum(fields)

    while time.monotonic() - started < MAX_SETTLE_S:
        busy_before, total_before = busy_and_total()
        time.sleep(0.5)
        busy_after, total_after = busy_and_total()
        if busy_after - busy_before <= IDLE_BUSY_FRACTION * max(1, total_after - total_before):
            break
    return time.monotonic() - started
