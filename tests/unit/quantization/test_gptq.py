import pytest
import torch

from sluice.quantization import convert_gptq
from tests.unit.quantization.gptq_checkpoint import gptq_round_trip
from tests.unit.quantization.reference import Reference, pack_gptq, quantize


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("group_size", [32, 128, -1])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("v1", [True, False])
def test_convert_gptq_recovers_ints_scales_zeros(bits, group_size, symmetric, v1):
    ref = quantize(
        48, 256, bits=bits, group_size=256 if group_size == -1 else group_size, symmetric=symmetric
    )
    weight = gptq_round_trip(ref, group_size, v1=v1)
    assert weight.input_perm is None
    assert weight.group_size == (256 if group_size == -1 else group_size)
    assert torch.equal(weight.q, ref.q)
    assert torch.equal(weight.zeros, ref.zeros)
    assert torch.equal(weight.scales, ref.scales)


def test_convert_gptq_v1_zero_point_zero_round_trips():
    ref = quantize(16, 64, bits=4, group_size=32, symmetric=False)
    zeros = ref.zeros.clone()
    zeros[0, :4] = 0  # stored as -1 in v1, which only the masked read maps back to 0
    ref = Reference(ref.q, ref.scales, zeros, ref.g_idx, 4)
    assert torch.equal(gptq_round_trip(ref, 32, v1=True).zeros, zeros)


@pytest.mark.parametrize("bits", [4, 8])
def test_convert_gptq_act_order_makes_groups_contiguous(bits):
    ref = quantize(32, 256, bits=bits, group_size=64, symmetric=False, act_order=True)
    weight = gptq_round_trip(ref, 64, v1=False)
    perm = weight.input_perm
    assert perm is not None and sorted(perm.tolist()) == list(range(256))
    assert torch.equal(ref.g_idx[perm], torch.arange(256) // 64)
    assert torch.equal(weight.q, ref.q[:, perm])
    assert torch.equal(weight.zeros, ref.zeros)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("act_order", [False, True])
def test_convert_gptq_reads_a_short_last_group(bits, act_order):
    # What AutoGPTQ writes for SmolLM2's 576 inputs at group size 128: groups 128 x 4 and 64.
    ref = quantize(16, 576, bits=bits, group_size=128, symmetric=False, act_order=act_order)
    weight = gptq_round_trip(ref, 128, v1=True)
    assert weight.num_groups == 5 and weight.group_size == 128
    assert torch.equal(weight.scales, ref.scales)
    assert torch.equal(weight.zeros, ref.zeros)
    perm = torch.arange(576) if weight.input_perm is None else weight.input_perm
    assert (weight.input_perm is not None) == act_order
    assert torch.equal(weight.dequantize(), ref.dequantize()[:, perm].float())


def test_convert_gptq_refuses_mismatched_scales():
    ref = quantize(16, 64, bits=4, group_size=32, symmetric=True)
    tensors = pack_gptq(ref, v1=True)
    with pytest.raises(ValueError, match=r"scales has shape \(1, 16\), expected \(2, 16\)"):
        convert_gptq(
            tensors["qweight"],
            tensors["qzeros"],
            tensors["scales"][:1],
            None,
            bits=4,
            group_size=32,
        )


def test_convert_gptq_refuses_uneven_g_idx():
    ref = quantize(16, 64, bits=4, group_size=32, symmetric=True)
    tensors = pack_gptq(ref, v1=True)
    g_idx = tensors["g_idx"].clone()
    g_idx[0] = 1  # group 0 now has 31 members, group 1 has 33
    with pytest.raises(ValueError, match="exactly 32 input features in each of 2 groups"):
        convert_gptq(
            tensors["qweight"], tensors["qzeros"], tensors["scales"], g_idx, bits=4, group_size=32
        )


def test_convert_gptq_refuses_three_bits():
    packed = torch.zeros(3, 16, dtype=torch.int32)
    with pytest.raises(ValueError, match="3 bits is not supported"):
        convert_gptq(packed, packed, torch.zeros(1, 16), None, bits=3, group_size=-1)


def test_convert_gptq_refuses_g_idx_beyond_the_groups():
    ref = quantize(16, 64, bits=4, group_size=32, symmetric=True)
    tensors = pack_gptq(ref, v1=True)
    g_idx = tensors["g_idx"].clone()
    g_idx[0] = 2
    with pytest.raises(ValueError, match="exactly 32 input features in each of 2 groups"):
        convert_gptq(
            tensors["qweight"], tensors["qzeros"], tensors["scales"], g_idx, bits=4, group_size=32
        )
