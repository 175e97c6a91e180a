import pytest
import torch

from sluice.quantization import convert_awq
from tests.unit.quantization.reference import pack_awq, quantize


@pytest.mark.parametrize("group_size", [32, 64, 128, -1])
@pytest.mark.parametrize("symmetric", [True, False])
def test_convert_awq_recovers_ints_scales_zeros(group_size, symmetric):
    ref = quantize(
        64, 256, bits=4, group_size=256 if group_size == -1 else group_size, symmetric=symmetric
    )
    tensors = pack_awq(ref)
    weight = convert_awq(
        tensors["qweight"], tensors["qzeros"], tensors["scales"], group_size=group_size
    )
    assert weight.bits == 4 and weight.input_perm is None
    assert torch.equal(weight.q, ref.q)
    assert torch.equal(weight.zeros, ref.zeros)
    assert torch.equal(weight.scales, ref.scales)


def test_convert_awq_columns_follow_the_interleaved_order():
    # Slot j holds j; slot j is column [0, 2, 4, 6, 1, 3, 5, 7][j], so column c reads its slot.
    word = torch.tensor([[0x76543210]], dtype=torch.int32)
    weight = convert_awq(word, word, torch.ones(1, 8), group_size=-1)
    assert weight.q.flatten().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


def test_convert_awq_refuses_mismatched_zeros():
    ref = quantize(16, 64, bits=4, group_size=32, symmetric=False)
    tensors = pack_awq(ref)
    with pytest.raises(ValueError, match=r"qzeros has shape \(1, 2\), expected \(2, 2\)"):
        convert_awq(tensors["qweight"], tensors["qzeros"][:1], tensors["scales"], group_size=32)


def test_convert_awq_refuses_input_size_not_divisible_by_group():
    ref = quantize(16, 96, bits=4, group_size=32, symmetric=False)
    tensors = pack_awq(ref)
    with pytest.raises(ValueError, match="input size 96 is not divisible by group size 128"):
        convert_awq(tensors["qweight"], tensors["qzeros"], tensors["scales"], group_size=128)
