"""Packing and unpacking of integers stored several to an int32 word, lowest bits first (GPTQ
and AWQ).

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


def _pack_factor(bits: int) -> int:
    if bits not in (4, 8):
        raise ValueError(f"cannot pack {bits}-bit values (only 4 and 8)")
    return 32 // bits


def _to_int32_words(words: torch.Tensor) -> torch.Tensor:
    """int64 words in [0, 2**32) -> int32 with the same bits (two's complement)."""
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def pack_rows(values: torch.Tensor, bits: int) -> torch.Tensor:
    """[rows, cols] ints in [0, 2**bits) -> [rows / p, cols] int32: row r * p + j in slot j."""
    per_word = _pack_factor(bits)
    rows, cols = values.shape
    if rows % per_word:
        raise ValueError(f"{rows} rows do not pack into words of {per_word}")
    grouped = values.long().reshape(rows // per_word, per_word, cols)
    shifts = torch.arange(0, 32, bits, dtype=torch.int64).view(1, -1, 1)
    return _to_int32_words((grouped << shifts).sum(dim=1))


def pack_columns(values: torch.Tensor, bits: int) -> torch.Tensor:
    """[rows, cols] ints in [0, 2**bits) -> [rows, cols / p] int32: column c * p + j in slot j."""
    per_word = _pack_factor(bits)
    rows, cols = values.shape
    if cols % per_word:
        raise ValueError(f"{cols} columns do not pack into words of {per_word}")
    grouped = values.long().reshape(rows, cols // per_word, per_word)
    shifts = torch.arange(0, 32, bits, dtype=torch.int64)
    return _to_int32_words((grouped << shifts).sum(dim=2))
