"""What this CPU offers the matmul kernels, as /proc/cpuinfo lists it (empty elsewhere)."""

import functools
from pathlib import Path


@functools.cache
def cpuinfo_field(field: str) -> str:
    """The first processor's value of `field` ("model name", "flags", ...), or ""."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == field:
            return value.strip()
    return ""


def cpu_flags() -> frozenset[str]:
    return frozenset(cpuinfo_field("flags").split())


def has_native_bf16() -> bool:
    """True on CPUs with bf16 dot-product instructions (AVX512-BF16 or AMX)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def bfloat16_support() -> str:
    """How this CPU runs bfloat16 matmuls, in the words of its flags."""
    if has_native_bf16():
        return "native bf16 instructions"
    if "avx512f" in cpu_flags():
        return "AVX-512 without avx512_bf16: oneDNN emulates bf16"
    return "no AVX-512: torch's own bf16 kernels"
