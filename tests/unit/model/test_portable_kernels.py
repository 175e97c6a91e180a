"""Kernels prebuilt for an x86-64 level, for machines without a compiler: named by what went
into them (not by the CPU that built them), and loaded from $SLUICE_KERNELS_DIR where the CPU
runs them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sluice.cpu import cpu_flags
from sluice.model import kernels

V3 = kernels.PORTABLE["x86-64-v3"][0]


def test_only_native_builds_are_named_after_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    native, v3 = kernels.library_name(kernels.NATIVE), kernels.library_name(V3)
    monkeypatch.setattr(kernels, "cpuinfo_field", lambda field: f"another CPU's {field}")
    assert kernels.library_name(kernels.NATIVE) != native
    assert kernels.library_name(V3) == v3


@pytest.mark.skipif(
    not kernels.PORTABLE["x86-64-v3"][1] <= cpu_flags(), reason="the CPU is not x86-64-v3"
)
def test_the_best_prebuilt_level_this_cpu_runs_is_loaded(tmp_path: Path) -> None:
    """Only the AVX2 level is in the directory: it is loaded, nothing is built."""
    if kernels.cpu_kernels() is None:
        pytest.skip("no compiler here to prebuild with")
    build = [sys.executable, "-m", "sluice.model.kernels.prebuild", str(tmp_path), "x86-64-v3"]
    subprocess.run(build, check=True, capture_output=True, timeout=300)
    load = (
        "import logging; logging.basicConfig(level=logging.INFO)\n"
        "from sluice.model import kernels\n"
        "print(kernels.cpu_kernels().name)"
    )
    env = {**os.environ, kernels.KERNELS_DIR_ENV: str(tmp_path), "CXX": "/nonexistent"}
    loaded = subprocess.run(
        [sys.executable, "-c", load], env=env, capture_output=True, text=True, timeout=120
    )
    assert loaded.stdout.strip() == kernels.library_name(V3), loaded.stderr
    assert "loaded the C++ kernels prebuilt for x86-64-v3" in loaded.stderr
