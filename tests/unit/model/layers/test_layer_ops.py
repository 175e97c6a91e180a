"""The C++ kernels of a decoder layer's small operators (RMSNorm with the residual add, the
rotary embedding, SiLU-and-multiply) against the torch spelling each layer keeps as its
reference: the same bits in float32 where the kernel promises them, within a rounding of the
dtype otherwise; a row's result the same alone and among others; for this CPU's build and the
AVX2 one (CPUs without AVX-512)."""

import pytest
import torch
from transformers import LlamaConfig

from sluice.cpu import cpu_flags
from sluice.model import kernels
from sluice.model.layers.activation import SiluAndMul
from sluice.model.layers.norm import RMSNorm
from sluice.model.layers.rotary import RotaryEmbedding

BUILDS = {"native": kernels.NATIVE, "avx2": ("-march=x86-64-v3",)}
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
ROUNDING = {torch.float32: 1e-6, torch.bfloat16: 2**-7, torch.float16: 2**-10}
"""A relative step of each dtype: the kernels round once where torch's operators round after
each step."""


def _ops(build: str) -> torch._ops._OpNamespace:
    if build == "avx2" and "avx2" not in cpu_flags():
        pytest.skip("an AVX2 build runs only on an x86 CPU with AVX2")
    return kernels.build_cpu_kernels(*BUILDS[build])


def _randn(*shape: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _assert_within_rounding(out: torch.Tensor, expected: torch.Tensor, steps: float) -> None:
    tolerance = steps * ROUNDING[out.dtype]
    torch.testing.assert_close(out.float(), expected.float(), rtol=tolerance, atol=tolerance)


def _assert_rows_independent(compute, rows: torch.Tensor) -> None:  # type: ignore[no-untyped-def]
    together = compute(rows)
    for row in (0, 5, len(rows) - 1):
        assert torch.equal(compute(rows[row : row + 1]), together[row : row + 1])


@pytest.mark.parametrize("build", list(BUILDS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [576, 37])
def test_add_rms_norm_matches_the_layer(build: str, dtype: torch.dtype, size: int) -> None:
    ops = _ops(build)
    norm = RMSNorm(size, 1e-5, dtype=dtype)
    norm.weight.data.copy_(_randn(size, dtype=dtype, seed=1))
    x, residual = _randn(20, size, dtype=dtype, seed=2), _randn(20, size, dtype=dtype, seed=3)

    normed, new_residual = ops.add_rms_norm(x, residual, norm.weight, norm.eps)
    expected, expected_residual = norm.reference_forward(x, residual)
    alone, same_x = ops.add_rms_norm(x, None, norm.weight, norm.eps)

    assert torch.equal(new_residual, expected_residual)  # one rounding of the sum either way
    _assert_within_rounding(normed, expected, 2)
    assert same_x is x
    _assert_within_rounding(alone, norm.reference_forward(x)[0], 2)
    _assert_rows_independent(lambda rows: ops.add_rms_norm(rows, None, norm.weight, 1e-5)[0], x)


@pytest.mark.parametrize("build", list(BUILDS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 12])
def test_rotary_embedding_matches_the_layer(build: str, dtype: torch.dtype, head_dim: int) -> None:
    ops = _ops(build)
    config = LlamaConfig(hidden_size=head_dim * 4, num_attention_heads=4, rope_theta=10000.0)
    rotary = RotaryEmbedding(config, head_dim, max_positions=300)
    heads, kv_heads, tokens = 6, 2, 9
    # q and k as the model has them: views into one fused qkv projection.
    qkv = _randn(tokens, (heads + 2 * kv_heads) * head_dim, dtype=dtype)
    q = qkv[:, : heads * head_dim].view(tokens, heads, head_dim)
    k = qkv[:, heads * head_dim : (heads + kv_heads) * head_dim].view(tokens, kv_heads, head_dim)
    positions = torch.tensor([0, 1, 2, 17, 100, 200, 250, 298, 299])

    q_out, k_out = ops.rotary_embedding(q, k, positions, rotary.cos, rotary.sin)
    q_expected, k_expected = rotary.reference_forward(positions, q, k)

    assert q_out.is_contiguous() and k_out.is_contiguous()
    if dtype == torch.float32:
        assert torch.equal(q_out, q_expected) and torch.equal(k_out, k_expected)
    else:  # torch's spelling rounds cos and sin and each product to the dtype first
        _assert_within_rounding(q_out, q_expected, 4)
        _assert_within_rounding(k_out, k_expected, 4)
    with pytest.raises(RuntimeError, match="position 300 is past the table"):
        ops.rotary_embedding(q, k, torch.full((tokens,), 300), rotary.cos, rotary.sin)


@pytest.mark.parametrize("build", list(BUILDS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [1536, 21])
def test_silu_and_mul_matches_the_layer(build: str, dtype: torch.dtype, size: int) -> None:
    ops = _ops(build)
    gate_up = _randn(20, 2 * size, dtype=dtype) * 4
    gate_up[0, :4] = torch.tensor([-100.0, 100.0, 0.0, -0.0])  # exp's extremes, and zero
    gate_up[1, 0] = float("nan")

    out = ops.silu_and_mul(gate_up)
    expected = SiluAndMul().reference_forward(gate_up)

    assert out.shape == (20, size)
    assert out[1, 0].isnan()
    _assert_within_rounding(out.nan_to_num(), expected.nan_to_num(), 4)
    _assert_rows_independent(ops.silu_and_mul, gate_up)


def test_the_layers_use_the_kernels_on_a_cpu() -> None:
    norm = RMSNorm(64, 1e-5, dtype=torch.bfloat16)
    x = _randn(3, 64, dtype=torch.bfloat16)
    gate_up = _randn(3, 128, dtype=torch.bfloat16)
    ops = kernels.cpu_kernels()
    assert ops is not None, "the C++ kernels did not build (see the log)"

    assert torch.equal(norm(x)[0], ops.add_rms_norm(x, None, norm.weight, 1e-5)[0])
    assert torch.equal(SiluAndMul()(gate_up), ops.silu_and_mul(gate_up))
