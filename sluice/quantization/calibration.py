"""The text shipped for calibrating and evaluating quantized models (see data/README.md), and its
cutting into fixed-length token windows. Tokenizes nothing itself: callers pass token ids."""

from enum import StrEnum
from importlib import resources

import torch


class ShippedText(StrEnum):
    """Public-domain prose in `sluice/quantization/data/`; the two texts share no passage."""

    CALIBRATION = "calibration"
    EVALUATION = "evaluation"


def read_text(text: ShippedText) -> str:
    return resources.files("sluice.quantization").joinpath(f"data/{text}.txt").read_text("utf-8")


def token_windows(token_ids: torch.Tensor, num_windows: int, window_len: int) -> torch.Tensor:
    """[num_windows, window_len] int64 windows spread evenly over token_ids [num_tokens].

    Windows overlap only when the text is shorter than num_windows * window_len: a calibration
    set that repeats some context beats refusing to run."""
    if num_windows < 1 or window_len < 1:
        raise ValueError(f"need at least one window of one token, got {num_windows} x {window_len}")
    num_tokens = token_ids.shape[0]
    if window_len > num_tokens:
        raise ValueError(f"window length {window_len} exceeds the text's {num_tokens} tokens")
    last_start = num_tokens - window_len
    starts = torch.linspace(0, last_start, num_windows).round().long() if num_windows > 1 else None
    if starts is None:
        starts = torch.zeros(1, dtype=torch.long)
    offsets = torch.arange(window_len)
    return token_ids.long()[starts.unsqueeze(1) + offsets.unsqueeze(0)]
