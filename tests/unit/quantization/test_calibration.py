import pytest
import torch

from sluice.quantization.calibration import ShippedText, read_text, token_windows


def test_shipped_texts_are_long_and_disjoint():
    calibration, evaluation = read_text(ShippedText.CALIBRATION), read_text(ShippedText.EVALUATION)
    assert len(calibration) > 20_000 and len(evaluation) > 80_000
    paragraphs = {p for p in calibration.split("\n\n") if len(p) > 40}
    assert paragraphs and not paragraphs & set(evaluation.split("\n\n"))


def test_token_windows_are_disjoint_when_the_text_is_long_enough():
    ids = torch.arange(100)
    windows = token_windows(ids, 4, 25)
    assert torch.equal(windows.flatten(), ids)


def test_token_windows_spread_over_the_text_and_overlap_when_short():
    windows = token_windows(torch.arange(50), 3, 30)
    assert windows.dtype == torch.int64
    assert windows[:, 0].tolist() == [0, 10, 20] and windows[-1, -1] == 49


def test_token_windows_single_window_starts_at_the_beginning():
    assert token_windows(torch.arange(10), 1, 4).tolist() == [[0, 1, 2, 3]]


def test_token_windows_refuse_a_window_longer_than_the_text():
    with pytest.raises(ValueError, match="exceeds the text's 10 tokens"):
        token_windows(torch.arange(10), 2, 11)
