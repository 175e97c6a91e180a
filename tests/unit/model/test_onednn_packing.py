"""Dense float32 weights packed for oneDNN compute what `F.linear` computes, and packing leaves
an embedding that shares the LM head's weight able to look tokens up."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sluice.distributed.parallel_context import SINGLE_DEVICE
from sluice.model.layers.embedding import ParallelLMHead, VocabParallelEmbedding
from sluice.model.layers.linear import ColumnParallelLinear, dense_linear
from sluice.model.onednn_packing import pack, pack_dense_weights, packing_pays

CPU = torch.device("cpu")
pytestmark = pytest.mark.skipif(
    not packing_pays(torch.float32, CPU), reason="this torch build has no oneDNN"
)


@pytest.mark.parametrize("rows", [1, 3, 64, 300])
def test_a_packed_weight_computes_what_f_linear_computes(rows: int) -> None:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(96, 40, generator=generator)
    bias = torch.randn(96, generator=generator)
    x = torch.randn(rows, 40, generator=generator)

    out = dense_linear(x, pack(weight), bias)

    torch.testing.assert_close(out, F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)


class _TiedModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(
            32, 16, parallel=SINGLE_DEVICE, dtype=torch.float32
        )
        self.proj = ColumnParallelLinear(16, [24], parallel=SINGLE_DEVICE, dtype=torch.float32)
        self.lm_head = ParallelLMHead(32, 16, parallel=SINGLE_DEVICE, dtype=torch.float32)
        self.lm_head.weight = self.embed_tokens.weight
        for param in self.parameters():
            param.data.normal_(generator=torch.Generator().manual_seed(1))


def test_packing_keeps_what_a_tied_model_computes() -> None:
    model = _TiedModel()
    tokens = torch.tensor([3, 0, 31])
    hidden = torch.randn(3, 16, generator=torch.Generator().manual_seed(2))
    embedded, projected = model.embed_tokens(tokens), model.proj(hidden)
    logits = model.lm_head.compute_logits(hidden)

    pack_dense_weights(model)

    assert model.proj.weight.is_mkldnn
    assert model.lm_head.packed_weight is not None
    assert not model.embed_tokens.weight.is_mkldnn  # lookups need the plain layout
    assert torch.equal(model.embed_tokens(tokens), embedded)
    torch.testing.assert_close(model.proj(hidden), projected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.lm_head.compute_logits(hidden), logits, rtol=1e-5, atol=1e-5)


def test_an_untied_lm_head_is_packed_in_place() -> None:
    head = ParallelLMHead(32, 16, parallel=SINGLE_DEVICE, dtype=torch.float32)
    head.weight.data.normal_(generator=torch.Generator().manual_seed(3))
    hidden = torch.randn(2, 16)
    expected = head.compute_logits(hidden)

    pack_dense_weights(head)

    assert head.weight.is_mkldnn and head.packed_weight is None
    torch.testing.assert_close(head.compute_logits(hidden), expected, rtol=1e-5, atol=1e-5)
