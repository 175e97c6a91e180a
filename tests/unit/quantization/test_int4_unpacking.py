import pytest
import torch

from sluice.quantization.int4_unpacking import (
    CANDIDATE_LAYOUTS,
    PackedLayout,
    cpu_packed_layout,
)


def _pack(codes: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.int(), 1)


def test_this_cpus_packing_is_a_known_layout():
    # On x86 torch's kernel is vectorised (AVX2 or AVX-512); the probe must recognise it.
    layout = cpu_packed_layout()
    assert layout in CANDIDATE_LAYOUTS
    assert layout.block_size == {"AVX512": 64, "AVX2": 32}[torch.backends.cpu.get_cpu_capability()]


@pytest.mark.parametrize(("output_size", "input_size"), [(3072, 576), (576, 1536), (80, 64)])
def test_unpacking_gives_back_the_packed_codes(output_size, input_size):
    layout = cpu_packed_layout()
    codes = torch.randint(0, 16, (output_size, input_size), dtype=torch.uint8)
    packed = _pack(codes)
    assert torch.equal(layout.unpack(packed, 0, output_size), codes)
    start = layout.block_size
    assert torch.equal(layout.unpack(packed, start, output_size), codes[start:])
    assert torch.equal(layout.unpack(packed, 0, start), codes[:start])


@pytest.mark.parametrize(
    ("halves", "packed_bytes"),
    [(True, [0x20, 0x31, 0x64, 0x75]), (False, [0x10, 0x32, 0x54, 0x76])],
)
def test_a_block_is_read_input_feature_by_input_feature(halves, packed_bytes):
    # A block of 4 outputs and 2 inputs, code = output + 4 * input: for each input feature,
    # byte d holds outputs d and d + 2 (halves) or 2d and 2d + 1 (pairs), low nibble first.
    packed = torch.tensor(packed_bytes, dtype=torch.uint8).view(4, 1)
    codes = PackedLayout(4, halves=halves).unpack(packed, 0, 4)
    assert codes.tolist() == [[output + 4 * feature for feature in (0, 1)] for output in range(4)]


def test_unpacking_refuses_rows_across_blocks():
    layout = PackedLayout(32, halves=True)
    with pytest.raises(ValueError, match=r"rows \[16, 64\) do not start and end on blocks"):
        layout.unpack(torch.zeros(64, 8, dtype=torch.uint8), 16, 64)
