"""C++ kernels compiled on the machine that runs them, at first use: attention over the paged
cache (paged_attention.cpp), dense linears over packed weights (linear.cpp) and a decoder
layer's small operators (layer_ops.cpp), built together as one library of torch operators.

They are built for this CPU's own instruction set (`-march=native`), so the build is keyed by
the CPU's model and flags as well as the source: a cache directory shared by machines of
different CPUs never hands one a binary built for another. torch's extension builder keeps
the result (~/.cache/torch_extensions, or $TORCH_EXTENSIONS_DIR) and serialises concurrent
builds with a lock file, so only the first process on a machine pays the compile (about
fifteen seconds); later ones load it in well under a second."""

import functools
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from sluice.cpu import cpuinfo_field

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
SOURCES = [HERE / "paged_attention.cpp", HERE / "linear.cpp", HERE / "layer_ops.cpp"]
HEADERS = [HERE / "vec.h"]
COMPILE_FLAGS = ["-O3", "-fopenmp", "-ffp-contract=off"]
"""-fopenmp makes ATen's parallel_for, inlined from its headers, use threads at all;
-ffp-contract=off keeps a * b + c two roundings, as torch's operators compute it, unless a
kernel asks for a fused multiply-add."""
NATIVE = ("-march=native",)

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
    """The kernels built for this CPU, or None (with one log line saying why) where they
    cannot be built: no C++ compiler, no ninja, a failed build."""
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
    flags = [*COMPILE_FLAGS, *arch_flags]
    build_key = "\n".join(
        [
            *(path.read_text() for path in [*SOURCES, *HEADERS]),
            " ".join(flags),
            torch.__version__,
            cpuinfo_field("model name"),
            cpuinfo_field("flags"),
        ]
    )
    name = "sluice_kernels_" + hashlib.sha256(build_key.encode()).hexdigest()[:16]
    from torch.utils import cpp_extension

    cpp_extension.load(
        name=name,
        sources=[str(source) for source in SOURCES],
        extra_cflags=flags,
        extra_ldflags=["-fopenmp"],
        is_python_module=False,
        verbose=False,
    )
    return getattr(torch.ops, name)
