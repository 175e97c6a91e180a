"""The C++ linear kernel over packed weights against a float64 product: float32 weights,
float32 weights kept as bfloat16 (exactly), bfloat16 models; a row's bits the same alone, in
any batch and on any thread count, for this CPU's build and the builds of CPUs without bf16
dot instructions or without AVX-512; and packing a model, tied LM head included."""

import pytest
import torch
from torch import nn

from sluice.cpu import cpu_flags
from sluice.distributed.parallel_context import SINGLE_DEVICE
from sluice.model import kernels
from sluice.model.kernel_packing import PANEL, pack, pack_dense_weights, packs_weights
from sluice.model.layers.embedding import ParallelLMHead, VocabParallelEmbedding
from sluice.model.layers.linear import ColumnParallelLinear, dense_linear, is_packed

CPU = torch.device("cpu")
pytestmark = pytest.mark.skipif(
    not packs_weights(torch.float32, CPU), reason="the C++ kernels did not build here"
)
BUILDS = {
    "native": kernels.NATIVE,
    "no_bf16_dot": ("-march=native", "-mno-avx512bf16"),
    "avx2": ("-march=x86-64-v3",),
}
"""Test id -> the architecture flags of the kernels' build."""
ROWS = [1, 2, 3, 8, 9, 17, 64, 300]
"""One row, the kernel's row blocks (2, 4 or 8 rows a pass) and their remainders."""
CASES = {
    # weight dtype, whether it is exact in bfloat16, input dtype, tolerance against float64
    "float32": (torch.float32, False, torch.float32, 1e-5),
    "float32_exact_in_bf16": (torch.float32, True, torch.float32, 1e-5),
    "bfloat16": (torch.bfloat16, True, torch.bfloat16, 2e-2),
}


def _kernel(build: str) -> kernels.PackedLinearFn:
    if build == "avx2" and "avx2" not in cpu_flags():
        pytest.skip("an AVX2 build runs only on an x86 CPU with AVX2")
    if build == "no_bf16_dot" and "avx512_bf16" not in cpu_flags():
        pytest.skip("the native build of this CPU has no bf16 dot instructions already")
    return kernels.build_cpu_kernels(*BUILDS[build]).packed_linear


def _operands(
    case: str, out_features: int, in_features: int, rows: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    weight_dtype, exact, input_dtype, _ = CASES[case]
    generator = torch.Generator().manual_seed(out_features * in_features + rows)
    weight = torch.randn(out_features, in_features, generator=generator)
    if exact:
        weight = weight.to(torch.bfloat16).to(torch.float32)
    bias = torch.randn(out_features, generator=generator)
    x = torch.randn(rows, in_features, generator=generator)
    return x.to(input_dtype), weight.to(weight_dtype), bias.to(weight_dtype)


@pytest.mark.parametrize("build", list(BUILDS))
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("shape", [(96, 64), (70, 576), (5, 38)])
def test_the_kernel_computes_the_product(build: str, case: str, shape: tuple[int, int]) -> None:
    kernel = _kernel(build)
    out_features, in_features = shape
    tolerance = CASES[case][3]
    for rows in ROWS:
        x, weight, bias = _operands(case, out_features, in_features, rows)
        packed = pack(weight)
        expected = x.double() @ weight.double().T + bias.double()

        out = kernel(x, packed, out_features, bias)
        unbiased = kernel(x, packed, out_features, None)

        assert out.dtype == x.dtype and out.shape == (rows, out_features)
        scale = expected.abs().max().item()
        torch.testing.assert_close(out.double(), expected, rtol=0, atol=tolerance * scale)
        torch.testing.assert_close(
            unbiased.double(), expected - bias.double(), rtol=0, atol=tolerance * scale
        )


def test_float32_weights_are_kept_in_bfloat16_only_where_that_is_exact() -> None:
    _, exact, _ = _operands("float32_exact_in_bf16", 70, 64, 1)
    _, inexact, _ = _operands("float32", 70, 64, 1)
    _, odd_inputs, _ = _operands("float32_exact_in_bf16", 70, 63, 1)

    assert pack(exact).dtype == torch.bfloat16 and pack(exact).shape == (3, 32, PANEL, 2)
    assert pack(exact, narrow_exact_float32=False).dtype == torch.float32
    assert pack(inexact).dtype == torch.float32 and pack(inexact).shape == (3, 64, PANEL)
    assert pack(odd_inputs).dtype == torch.float32


@pytest.mark.parametrize("build", list(BUILDS))
def test_float32_weights_give_the_same_bits_kept_in_bfloat16(build: str) -> None:
    kernel = _kernel(build)
    x, weight, bias = _operands("float32_exact_in_bf16", 70, 576, 17)

    narrow = kernel(x, pack(weight), 70, bias)
    wide = kernel(x, pack(weight, narrow_exact_float32=False), 70, bias)

    assert torch.equal(narrow, wide)


@pytest.mark.parametrize("build", list(BUILDS))
@pytest.mark.parametrize("case", list(CASES))
def test_a_row_gets_the_same_bits_alone_in_a_batch_and_on_one_thread(build: str, case: str) -> None:
    kernel = _kernel(build)
    x, weight, bias = _operands(case, 200, 576, max(ROWS))
    packed = pack(weight)
    together = kernel(x, packed, 200, bias)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        on_one_thread = kernel(x, packed, 200, bias)
    finally:
        torch.set_num_threads(threads)

    assert torch.equal(on_one_thread, together)
    for rows in ROWS:
        assert torch.equal(kernel(x[:rows], packed, 200, bias), together[:rows]), rows
    for row in (0, 7, 8, 299):
        assert torch.equal(kernel(x[row : row + 1], packed, 200, bias), together[row : row + 1])


def test_the_kernel_refuses_what_it_cannot_compute() -> None:
    kernel = _kernel("native")
    x, weight, _ = _operands("float32", 70, 64, 3)
    packed = pack(weight)

    with pytest.raises(RuntimeError, match="bfloat16 over bfloat16 weights"):
        kernel(x.to(torch.bfloat16), packed, 70, None)
    with pytest.raises(RuntimeError, match="does not fit 32 in_features"):
        kernel(x[:, :32].contiguous(), packed, 70, None)
    with pytest.raises(RuntimeError, match="cannot hold 100 out_features"):
        kernel(x, packed, 100, None)
    with pytest.raises(RuntimeError, match="contiguous"):
        kernel(x.T.contiguous().T, packed, 70, None)
    with pytest.raises(RuntimeError, match="out_features elements"):
        kernel(x, packed, 70, torch.zeros(69))


class _TiedModel(nn.Module):
    def __init__(self, dtype: torch.dtype, proj_inputs: int = 16) -> None:
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(32, 16, parallel=SINGLE_DEVICE, dtype=dtype)
        self.proj = ColumnParallelLinear(proj_inputs, [24], parallel=SINGLE_DEVICE, dtype=dtype)
        self.lm_head = ParallelLMHead(32, 16, parallel=SINGLE_DEVICE, dtype=dtype)
        self.lm_head.weight = self.embed_tokens.weight
        for param in self.parameters():
            param.data.normal_(generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packing_keeps_what_a_tied_model_computes(dtype: torch.dtype) -> None:
    model = _TiedModel(dtype)
    tokens = torch.tensor([3, 0, 31])
    hidden = torch.randn(3, 16, generator=torch.Generator().manual_seed(2)).to(dtype)
    embedded, projected = model.embed_tokens(tokens), model.proj(hidden)
    logits = model.lm_head.compute_logits(hidden)

    pack_dense_weights(model)

    assert is_packed(model.proj.weight)
    assert model.lm_head.packed_weight is not None
    assert not is_packed(model.embed_tokens.weight)  # lookups need the plain layout
    assert torch.equal(model.embed_tokens(tokens), embedded)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(model.proj(hidden), projected, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(
        model.lm_head.compute_logits(hidden), logits, rtol=tolerance, atol=tolerance
    )


def test_an_untied_lm_head_is_packed_in_place() -> None:
    head = ParallelLMHead(32, 16, parallel=SINGLE_DEVICE, dtype=torch.float32)
    head.weight.data.normal_(generator=torch.Generator().manual_seed(3))
    hidden = torch.randn(2, 16)
    expected = head.compute_logits(hidden)

    pack_dense_weights(head)

    assert is_packed(head.weight) and head.packed_weight is None
    torch.testing.assert_close(head.compute_logits(hidden), expected, rtol=1e-5, atol=1e-5)


def test_bfloat16_weights_whose_inputs_do_not_pair_up_stay_as_they_are() -> None:
    model = _TiedModel(torch.bfloat16, proj_inputs=15)
    hidden = torch.randn(2, 15).to(torch.bfloat16)
    expected = model.proj(hidden)

    pack_dense_weights(model)

    assert not is_packed(model.proj.weight) and is_packed(model.lm_head.packed_weight)
    assert torch.equal(model.proj(hidden), expected)
    assert torch.equal(dense_linear(hidden, model.proj.weight), expected)
