"""The machine description every benchmark result carries, and the rates its floors use."""

import math
from pathlib import Path

import torch

from sluice.bench.machine import CPU_FEATURES, cpu_description, measure_rates


def test_cpu_description_names_the_model_and_every_matmul_feature() -> None:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(line for line in cpuinfo.splitlines() if line.startswith("model name"))
    flags = next(line for line in cpuinfo.splitlines() if line.startswith("flags")).split()

    description = cpu_description()

    assert model.partition(":")[2].strip() in description
    for feature in CPU_FEATURES:
        expected = feature if feature in flags else f"no {feature}"
        assert f"; {expected}" in description or f", {expected}" in description


def test_measured_rates_are_positive_and_finite() -> None:
    rates = measure_rates((torch.float32,), repeats=1)

    for rate in (rates.copy_bytes_per_s, rates.read_bytes_per_s, rates.gemm_flops_per_s["float32"]):
        assert math.isfinite(rate) and rate > 0
