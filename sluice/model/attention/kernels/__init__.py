"""C++ kernels compiled on the machine that runs them, at first use.

They are built for this CPU's own instruction set (`-march=native`), so the build is keyed by
the CPU's model and flags as well as the source: a cache directory shared by machines of
different CPUs never hands one a binary built for another. torch's extension builder keeps
the result (~/.cache/torch_extensions, or $TORCH_EXTENSIONS_DIR) and serialises concurrent
builds with a lock file, so only the first process on a machine pays the compile (about ten
seconds); later ones load it in well under a second."""

import functools
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from sluice.cpu import cpuinfo_field

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("paged_attention.cpp")
HEADERS = [Path(__file__).with_name("vec.h")]
COMPILE_FLAGS = ["-O3", "-fopenmp"]
"""-fopenmp makes ATen's parallel_for, inlined from its headers, use threads at all."""

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


@functools.cache
def paged_attention_kernel() -> PagedAttentionFn | None:
    """The kernel built for this CPU, or None (with one log line saying why) where it cannot
    be built: no C++ compiler, no ninja, a failed build."""
    try:
        return build_paged_attention("native")
    except Exception as error:  # a missing compiler or ninja raises several kinds
        message = str(error).strip()
        logger.warning(
            "attention falls back to gathering the paged cache: its C++ kernel could not be "
            "built (%s)",
            message.splitlines()[-1] if message else type(error).__name__,
        )
        return None


@functools.cache
def build_paged_attention(march: str) -> PagedAttentionFn:
    """The kernel built for `-march=<march>` ("native": this CPU; "x86-64-v3": AVX2 without
    AVX-512, to test that path on any recent x86 CPU)."""
    flags = [*COMPILE_FLAGS, f"-march={march}"]
    build_key = "\n".join(
        [
            *(path.read_text() for path in [SOURCE, *HEADERS]),
            " ".join(flags),
            torch.__version__,
            cpuinfo_field("model name"),
            cpuinfo_field("flags"),
        ]
    )
    name = "sluice_paged_attention_" + hashlib.sha256(build_key.encode()).hexdigest()[:16]
    from torch.utils import cpp_extension

    cpp_extension.load(
        name=name,
        sources=[str(SOURCE)],
        extra_cflags=flags,
        extra_ldflags=["-fopenmp"],
        is_python_module=False,
        verbose=False,
    )
    return getattr(torch.ops, name).paged_attention
