"""C++ kernels compiled on the machine that runs them, at first use: attention over the paged
cache (paged_attention.cpp), dense linears over packed weights (linear.cpp) and a decoder
layer's small operators (layer_ops.cpp), built together as one library of torch operators.

They are built for this CPU's own instruction set (`-march=native`), so the build is keyed by
the CPU's model and flags as well as the source: a cache directory shared by machines of
different CPUs never hands one a binary built for another. torch's extension builder keeps
the result (~/.cache/torch_extensions, or $TORCH_EXTENSIONS_DIR) and serialises concurrent
builds with a lock file, so only the first process on a machine pays the compile (about
fifteen seconds); later ones load it in well under a second.

Where no compiler will be (a container image's final stage), `write_portable_kernels` builds
them beforehand for each of a few x86-64 levels (`PORTABLE`) into a directory; with
$SLUICE_KERNELS_DIR naming it, the best level this CPU runs is loaded instead of a build."""

import functools
import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from sluice.cpu import cpu_flags, cpuinfo_field

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
SOURCES = [HERE / "paged_attention.cpp", HERE / "linear.cpp", HERE / "layer_ops.cpp"]
HEADERS = [HERE / "vec.h"]
COMPILE_FLAGS = ["-O3", "-fopenmp", "-ffp-contract=off"]
"""-fopenmp makes ATen's parallel_for, inlined from its headers, use threads at all;
-ffp-contract=off keeps a * b + c two roundings, as torch's operators compute it, unless a
kernel asks for a fused multiply-add."""
NATIVE = ("-march=native",)
KERNELS_DIR_ENV = "SLUICE_KERNELS_DIR"

_X86_64_V3 = frozenset({"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe"})
_X86_64_V4 = _X86_64_V3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
PORTABLE: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "x86-64-v4-bf16": (("-march=x86-64-v4", "-mavx512bf16"), _X86_64_V4 | {"avx512_bf16"}),
    "x86-64-v4": (("-march=x86-64-v4",), _X86_64_V4),
    "x86-64-v3": (("-march=x86-64-v3",), _X86_64_V3),
}
"""Prebuilt levels, best first: their architecture flags, and the CPU flags (as /proc/cpuinfo
names them) a CPU needs to run each."""

PagedAttentionFn = Callable[
    [
        torch.Tensor,
        torch.Tensor,
        torch.Tensor,
        torch.Tensor,
        torch.Tensor,
        torch.Tensor,
        int,
        float,
    ],
    torch.Tensor,
]
"""(q, key_cache, value_cache, block_tables, row_requests, context_lens, block_size, scale)
-> out; see paged_attention.cpp."""

PackedLinearFn = Callable[[torch.Tensor, torch.Tensor, int, torch.Tensor | None], torch.Tensor]
"""(x, packed weight, out_features, bias) -> out; see linear.cpp."""


@functools.cache
def cpu_kernels() -> torch._ops._OpNamespace | None:
    """The prebuilt kernels of $SLUICE_KERNELS_DIR for this CPU, else the kernels built for
    it, or None (with one log line saying why) where they cannot be built: no C++ compiler, no
    ninja, a failed build."""
    prebuilt = _load_portable_kernels()
    if prebuilt is not None:
        return prebuilt
    try:
        return build_cpu_kernels(*NATIVE)
    except Exception as error:  # a missing compiler or ninja raises several kinds
        message = str(error).strip()
        logger.warning(
            "the C++ kernels could not be built (%s): attention gathers the paged cache into "
            "batched matmuls and linears run on torch's own, both slower",
            message.splitlines()[-1] if message else type(error).__name__,
        )
        return None


def cpu_kernels_for(tensor: torch.Tensor) -> torch._ops._OpNamespace | None:
    """The kernels, where `tensor` is on the CPU and they built."""
    return cpu_kernels() if tensor.device.type == "cpu" else None


def packed_linear_kernel() -> PackedLinearFn | None:
    ops = cpu_kernels()
    return None if ops is None else ops.packed_linear


@functools.cache
def build_cpu_kernels(*arch_flags: str) -> torch._ops._OpNamespace:
    """The kernels built for `arch_flags` (`NATIVE`: this CPU's own instruction set;
    `-march=x86-64-v3`: AVX2 without AVX-512, to test that path on any recent x86 CPU).
    Raises where they cannot be built."""
    name = library_name(arch_flags)
    _compile(name, arch_flags)
    return getattr(torch.ops, name)


def library_name(arch_flags: Iterable[str]) -> str:
    """The library's name and torch operator namespace: a hash of what went into it. A build
    for `-march=native` depends on the CPU it ran on too; one for a named level does not."""
    flags = [*COMPILE_FLAGS, *arch_flags]
    parts = [*(path.read_text() for path in [*SOURCES, *HEADERS]), " ".join(flags)]
    parts.append(torch.__version__)
    if "-march=native" in flags:
        parts += [cpuinfo_field("model name"), cpuinfo_field("flags")]
    return "sluice_kernels_" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def write_portable_kernels(directory: Path, levels: Iterable[str] = PORTABLE) -> list[Path]:
    """Build the kernels for each of `levels` (names of `PORTABLE`) and put each library in
    `directory`, for $SLUICE_KERNELS_DIR. Each is loaded once built (torch's builder does so),
    so build on a CPU that runs the best level, or expect the levels above it to fail."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for level in levels:
        arch_flags, _ = PORTABLE[level]
        name = library_name(arch_flags)
        _compile(name, arch_flags)
        (built,) = (path for path in torch.ops.loaded_libraries if path.endswith(f"/{name}.so"))
        written.append(Path(shutil.copy(built, directory / f"{name}.so")))
    return written


def _load_portable_kernels() -> torch._ops._OpNamespace | None:
    directory = os.environ.get(KERNELS_DIR_ENV)
    if not directory:
        return None
    here = cpu_flags()
    for level, (arch_flags, needs) in PORTABLE.items():
        name = library_name(arch_flags)
        path = Path(directory) / f"{name}.so"
        if needs <= here and path.is_file():
            torch.ops.load_library(str(path))
            logger.info("loaded the C++ kernels prebuilt for %s from %s", level, directory)
            return getattr(torch.ops, name)
    logger.warning("%s holds no kernels this CPU runs; building them here", directory)
    return None


def _compile(name: str, arch_flags: Iterable[str]) -> None:
    from torch.utils import cpp_extension

    cpp_extension.load(
        name=name,
        sources=[str(source) for source in SOURCES],
        extra_cflags=[*COMPILE_FLAGS, *arch_flags],
        extra_ldflags=["-fopenmp"],
        is_python_module=False,
        verbose=False,
    )
