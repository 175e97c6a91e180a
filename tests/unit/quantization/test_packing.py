import torch

from sluice.quantization.packing import unpack_columns, unpack_rows


def test_unpack_columns_lowest_bits_first():
    word = torch.tensor([[0x76543210]], dtype=torch.int32)
    assert unpack_columns(word, 4).tolist() == [[0, 1, 2, 3, 4, 5, 6, 7]]


def test_unpack_columns_sign_bit_is_data():
    word = torch.tensor([[-1, -(2**31)]], dtype=torch.int32)  # 0xFFFFFFFF, 0x80000000
    assert unpack_columns(word, 8).tolist() == [[255, 255, 255, 255, 0, 0, 0, 128]]


def test_unpack_rows_spreads_a_word_down_a_column():
    words = torch.tensor([[0x04030201, 0x08070605]], dtype=torch.int32)
    assert unpack_rows(words, 8).tolist() == [[1, 5], [2, 6], [3, 7], [4, 8]]
