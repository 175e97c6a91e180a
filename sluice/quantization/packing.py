"""Unpacking of integers stored several to an int32 word, lowest bits first (GPTQ and AWQ).

With p = 32 / bits values per word, value j of a word sits in bits [j * bits, (j + 1) * bits)."""

import torch


def _shifts(bits: int, device: torch.device) -> torch.Tensor:
    if 32 % bits:
        raise ValueError(f"cannot unpack {bits}-bit values from 32-bit words")
    return torch.arange(0, 32, bits, dtype=torch.int32, device=device)


def unpack_rows(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """[rows, cols] int32 -> [rows * p, cols]: value j of word r goes to row r * p + j."""
    shifts = _shifts(bits, packed.device).view(1, -1, 1)
    values = (packed.unsqueeze(1) >> shifts) & ((1 << bits) - 1)  # [rows, p, cols]
    return values.reshape(-1, packed.shape[1])


def unpack_columns(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """[rows, cols] int32 -> [rows, cols * p]: value j of word c goes to column c * p + j."""
    shifts = _shifts(bits, packed.device)
    values = (packed.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)  # [rows, cols, p]
    return values.reshape(packed.shape[0], -1)
