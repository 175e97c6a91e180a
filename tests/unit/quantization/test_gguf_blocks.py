import gguf
import numpy as np
import pytest
import torch

from sluice.quantization.gguf_blocks import GgmlType, convert_gguf_blocks


@pytest.mark.parametrize("ggml_type", list(GgmlType))
def test_blocks_convert_to_the_weights_ggml_dequantizes_them_to(ggml_type):
    rng = np.random.default_rng(int(ggml_type))
    weight = rng.standard_normal((16, 128)).astype(np.float32)
    weight[0, :32] = 0.25  # a block of equal values: Q4_1 stores d = 0
    weight[1, 32:64] = -0.5
    weight[2, 64:96] = 0.0
    kind = gguf.GGMLQuantizationType(int(ggml_type))
    blocks = gguf.quants.quantize(weight, kind)
    expected = torch.from_numpy(gguf.quants.dequantize(blocks, kind))

    converted = convert_gguf_blocks(torch.from_numpy(blocks), ggml_type)

    assert converted.bits == ggml_type.bits and converted.group_size == 32
    assert int(converted.q.min()) >= 0 and int(converted.q.max()) < 2**ggml_type.bits
    torch.testing.assert_close(converted.dequantize(), expected, rtol=0, atol=1e-6)
    assert torch.equal(converted.dequantize()[2, 64:96], torch.zeros(32))


def test_q4_0_and_q8_0_zero_points_are_integers():
    assert torch.equal(
        convert_gguf_blocks(torch.zeros(2, 18, dtype=torch.uint8), GgmlType.Q4_0).zeros,
        torch.full((1, 2), 8, dtype=torch.int32),
    )
    q8 = convert_gguf_blocks(torch.zeros(2, 34, dtype=torch.uint8), GgmlType.Q8_0)
    assert q8.zeros.dtype == torch.int32 and bool((q8.zeros == 128).all())


def test_blocks_refuse_rows_of_partial_blocks():
    with pytest.raises(ValueError, match="whole 20-byte blocks"):
        convert_gguf_blocks(torch.zeros(2, 30, dtype=torch.uint8), GgmlType.Q4_1)
