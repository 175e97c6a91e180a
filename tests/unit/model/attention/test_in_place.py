"""The in-place attention kernel against float64 attention on contexts scattered over a paged
cache: every dtype it takes, head sizes its SIMD width divides and ones it does not, built for
this CPU and (on x86 CPUs with AVX2) for AVX2 alone, the path of CPUs without AVX-512; the
same bits on any thread count; and the fallback when it cannot build."""

import logging

import pytest
import torch
import torch.utils.cpp_extension

from sluice.cpu import cpu_flags
from sluice.model import kernels
from sluice.model.attention import in_place
from sluice.model.attention.backend import write_kv as reference_write_kv
from sluice.model.attention.in_place import InPlaceAttentionBackend, attention_backend_for
from sluice.model.attention.paged import PagedAttentionBackend

BLOCK_SIZE = 16
NUM_HEADS, NUM_KV_HEADS = 6, 2
CONTEXTS = [1, 15, 16, 17, 300]
"""Each row's context: inside one block, a block's edge, across many blocks."""
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}


BUILDS = {"native": kernels.NATIVE, "avx2": ("-march=x86-64-v3",)}
"""Test id -> the architecture flags of the kernels' build."""


def _kernel(build: str = "native") -> kernels.PagedAttentionFn:
    if build == "avx2" and "avx2" not in cpu_flags():
        pytest.skip("an AVX2 build runs only on an x86 CPU with AVX2")
    return kernels.build_cpu_kernels(*BUILDS[build]).paged_attention


def _scattered_cache(
    head_dim: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A cache of random keys and values, one block table per context (blocks in random
    order), and queries: one row per context."""
    rng = torch.Generator().manual_seed(0)
    blocks_each = -(-max(CONTEXTS) // BLOCK_SIZE)
    num_blocks = len(CONTEXTS) * blocks_each
    kv_cache = torch.randn(2, NUM_KV_HEADS, num_blocks * BLOCK_SIZE, head_dim, generator=rng)
    tables = torch.randperm(num_blocks, generator=rng).view(len(CONTEXTS), blocks_each)
    q = torch.randn(len(CONTEXTS), NUM_HEADS, head_dim, generator=rng)
    return kv_cache.to(dtype), tables.int(), q.to(dtype)


def _float64_attention(
    q: torch.Tensor, kv_cache: torch.Tensor, tables: torch.Tensor, scale: float
) -> torch.Tensor:
    out = torch.empty(q.shape, dtype=torch.float64)
    group = NUM_HEADS // NUM_KV_HEADS
    for row, context in enumerate(CONTEXTS):
        positions = torch.arange(context)
        slots = tables[row, positions // BLOCK_SIZE].long() * BLOCK_SIZE + positions % BLOCK_SIZE
        for head in range(NUM_HEADS):
            keys = kv_cache[0, head // group, slots].double()
            values = kv_cache[1, head // group, slots].double()
            weights = (keys @ q[row, head].double() * scale).softmax(-1)
            out[row, head] = weights @ values
    return out


def _attend(
    q: torch.Tensor, kv_cache: torch.Tensor, tables: torch.Tensor, scale: float, build: str
) -> torch.Tensor:
    rows = torch.arange(len(CONTEXTS), dtype=torch.int32)
    contexts = torch.tensor(CONTEXTS, dtype=torch.int32)
    kernel = _kernel(build)
    return kernel(q, kv_cache[0], kv_cache[1], tables, rows, contexts, BLOCK_SIZE, scale)


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("head_dim", [64, 12], ids=["simd", "scalar"])
@pytest.mark.parametrize("dtype", TOLERANCE, ids=str)
def test_kernel_matches_float64_attention(head_dim: int, dtype: torch.dtype, build: str) -> None:
    kv_cache, tables, q = _scattered_cache(head_dim, dtype)
    scale = head_dim**-0.5

    out = _attend(q, kv_cache, tables, scale, build)

    assert out.dtype == dtype
    expected = _float64_attention(q, kv_cache, tables, scale)
    tolerance = TOLERANCE[dtype]
    torch.testing.assert_close(out.double(), expected, rtol=tolerance, atol=tolerance)


def test_kernel_gives_the_same_bits_on_any_number_of_threads() -> None:
    kv_cache, tables, q = _scattered_cache(64, torch.bfloat16)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = _attend(q, kv_cache, tables, 0.125, "native")
    finally:
        torch.set_num_threads(threads)

    assert torch.equal(_attend(q, kv_cache, tables, 0.125, "native"), alone)


def test_kernel_softmax_survives_scores_far_apart() -> None:
    """Scores hundreds apart: the largest key takes all the weight, none overflows."""
    kv_cache, tables, q = _scattered_cache(64, torch.float32)
    q = q * 200

    out = _attend(q, kv_cache, tables, 0.125, "native")

    assert torch.isfinite(out).all()
    torch.testing.assert_close(
        out.double(), _float64_attention(q, kv_cache, tables, 0.125), rtol=1e-4, atol=1e-4
    )


def test_kernel_refuses_a_context_longer_than_its_block_table() -> None:
    kv_cache, tables, q = _scattered_cache(64, torch.float32)
    rows = torch.arange(len(CONTEXTS), dtype=torch.int32)
    too_long = torch.full((len(CONTEXTS),), tables.shape[1] * BLOCK_SIZE + 1, dtype=torch.int32)

    with pytest.raises(RuntimeError, match="names a request or context its table lacks"):
        _kernel()(q, kv_cache[0], kv_cache[1], tables, rows, too_long, BLOCK_SIZE, 0.125)


def test_kernel_refuses_a_block_outside_the_cache() -> None:
    kv_cache, tables, q = _scattered_cache(64, torch.float32)
    rows = torch.arange(len(CONTEXTS), dtype=torch.int32)
    contexts = torch.tensor(CONTEXTS, dtype=torch.int32)
    tables[0, 0] = kv_cache.shape[2] // BLOCK_SIZE

    with pytest.raises(RuntimeError, match="is outside the cache"):
        _kernel()(q, kv_cache[0], kv_cache[1], tables, rows, contexts, BLOCK_SIZE, 0.125)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_write_kv_stores_strided_keys_and_values_at_their_slots(dtype: torch.dtype) -> None:
    write_kv = kernels.build_cpu_kernels(*kernels.NATIVE).write_kv
    generator = torch.Generator().manual_seed(0)
    kv_cache = torch.randn(2, NUM_KV_HEADS, 64, 8, generator=generator).to(dtype)
    expected = kv_cache.clone()
    # k and v as the model has them: views into one fused projection.
    kv = torch.randn(5, 2 * NUM_KV_HEADS * 8 + 3, generator=generator).to(dtype)
    k = kv[:, : NUM_KV_HEADS * 8].view(5, NUM_KV_HEADS, 8)
    v = kv[:, NUM_KV_HEADS * 8 : 2 * NUM_KV_HEADS * 8].view(5, NUM_KV_HEADS, 8)
    slots = torch.tensor([63, 0, 17, 18, 40])

    write_kv(k, v, kv_cache, slots)
    reference_write_kv(expected, slots, k, v)

    assert torch.equal(kv_cache, expected)
    with pytest.raises(RuntimeError, match="slot 64 is outside the cache"):
        write_kv(k, v, kv_cache, torch.tensor([0, 1, 2, 3, 64]))


def test_backend_on_a_cpu_uses_the_kernel() -> None:
    assert isinstance(attention_backend_for(torch.device("cpu")), InPlaceAttentionBackend)


def test_backend_falls_back_to_gathering_when_the_kernel_cannot_build(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_compiler(**_: object) -> None:
        raise RuntimeError("Error building extension: c++: command not found")

    def forget_builds() -> None:
        kernels.cpu_kernels.cache_clear()
        kernels.build_cpu_kernels.cache_clear()

    forget_builds()
    monkeypatch.setattr(torch.utils.cpp_extension, "load", no_compiler)
    try:
        with caplog.at_level(logging.WARNING, logger=kernels.__name__):
            backend = in_place.attention_backend_for(torch.device("cpu"))
    finally:
        forget_builds()

    assert isinstance(backend, PagedAttentionBackend)
    (record,) = caplog.records
    assert "c++: command not found" in record.getMessage()
